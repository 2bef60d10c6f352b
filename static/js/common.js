// Shared by the pages' scripts: the CSRF token for POSTs, and a table cell set as text (never markup).
window.Arbiter = {
  csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  },
  cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  },
};
