// Shared by the pages' scripts: the CSRF token for POSTs, a table cell set as text (never markup),
// and a duration in words for job progress.
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
  duration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  },
};
