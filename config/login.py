"""Login throttling: too many failed logins for one username, or from one address, and further
attempts are refused for a while without the password being checked.

Every failed check of a password claims one of N slots in the cache for the username (and one of
M for the client's address); a slot expires LOGIN_FAILURE_WINDOW_S after the failure that claimed
it. While all slots are taken the login is refused with 429 and a message saying when to try
again; the oldest failure ageing out frees a slot. A successful login frees the username's slots
(not the address's: one right password must not reset a guessing run from that address).

Slots are claimed with ``cache.add``, which is atomic in every backend (an INSERT on the cache's
primary key in the database, SET NX in Redis), so concurrent guesses from several gunicorn
workers cannot share a slot and slip past the limit, as a read-modify-write counter would let
them. The cache is the database (``CACHES`` in settings, and why).

Both login forms are throttled: ours (``/login/``) and the Django admin's. There is no token
endpoint to throttle: API tokens are issued in the admin, and the API takes no passwords.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.forms.forms import NON_FIELD_ERRORS


def client_ip(request) -> str:
    """REMOTE_ADDR or, behind NUM_PROXIES trusted proxies, the address the outermost one saw.

    X-Forwarded-For is read from the right: entries to the left of our own proxies' are whatever
    the client chose to send, so trusting them would let a guesser pick a fresh address per try.
    """
    if settings.NUM_PROXIES:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-min(settings.NUM_PROXIES, len(forwarded))]
    return request.META.get("REMOTE_ADDR", "")


def _slots(kind: str, value: str, count: int) -> list[str]:
    # Hashed: usernames are user input, and cache keys must be short and plain.
    digest = hashlib.sha256(value.encode()).hexdigest()[:40]
    return [f"login-failure:{kind}:{digest}:{i}" for i in range(count)]


def _username_slots(username: str) -> list[str]:
    # "Ada" and "ada " are the same account to a guesser wherever the database compares loosely.
    normalized = unicodedata.normalize("NFKC", username).strip().casefold()
    return _slots("user", normalized, settings.LOGIN_MAX_FAILURES_PER_USERNAME)


def _ip_slots(ip: str) -> list[str]:
    return _slots("ip", ip, settings.LOGIN_MAX_FAILURES_PER_IP)


def _slot_sets(*, username: str, ip: str) -> list[list[str]]:
    sets = [_ip_slots(ip)]
    if username:
        sets.append(_username_slots(username))
    return sets


def login_locked_for(*, username: str, ip: str) -> int:
    """Seconds until the next attempt is allowed; 0 when it is allowed now."""
    wait = 0.0
    now = time.time()
    for slots in _slot_sets(username=username, ip=ip):
        taken = cache.get_many(slots)
        if len(taken) >= len(slots):
            # Each slot holds the time of its failure; the oldest is the first to free up.
            wait = max(wait, min(taken.values()) + settings.LOGIN_FAILURE_WINDOW_S - now)
    return max(0, math.ceil(wait))


def login_failure_record(*, username: str, ip: str) -> None:
    now = time.time()
    for slots in _slot_sets(username=username, ip=ip):
        for key in slots:
            if cache.add(key, now, timeout=settings.LOGIN_FAILURE_WINDOW_S):
                break


def login_success_record(*, username: str) -> None:
    cache.delete_many(_username_slots(username))


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


class ThrottledFormMixin:
    """For an ``AuthenticationForm``: refuse while locked, before any password is checked."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request)
        wait = login_locked_for(username=username, ip=ip)
        if wait:
            self.retry_after = wait
            raise ValidationError(
                "Too many failed login attempts. Try again in %(wait)s.", code="throttled", params={"wait": _minutes(wait)}
            )
        try:
            cleaned = super().clean()
        except ValidationError as exc:
            # A wrong password or an unknown user (the same answer, so usernames do not leak).
            if exc.code == "invalid_login":
                login_failure_record(username=username, ip=ip)
            raise
        login_success_record(username=username)
        return cleaned


class ThrottledAuthenticationForm(ThrottledFormMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledFormMixin, AdminAuthenticationForm):
    pass


def _throttled_response(response, form):
    """429 with Retry-After when the form was refused for too many failures."""
    if form is not None and form.has_error(NON_FIELD_ERRORS, "throttled"):
        response.status_code = 429
        response["Retry-After"] = str(form.retry_after)
    return response


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True
    http_method_names = ["get", "head", "post"]

    def dispatch(self, request, *args, **kwargs):
        # LoginView redirects signed-in users before looking at the method; refuse PUT & co. first.
        if request.method.lower() not in self.http_method_names:
            return self.http_method_not_allowed(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def form_invalid(self, form):
        return _throttled_response(super().form_invalid(form), form)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = context["form"]
        if form.is_bound and form.has_error(NON_FIELD_ERRORS, "throttled"):
            context["throttled"] = form.non_field_errors()[0]
        return context


def throttle_admin_login(site) -> None:
    """The admin's own login form, throttled the same way (call before ``site.urls`` is read)."""
    site.login_form = ThrottledAdminAuthenticationForm
    login = site.login

    def throttled_login(request, extra_context=None):
        response = login(request, extra_context)
        return _throttled_response(response, getattr(response, "context_data", None) and response.context_data.get("form"))

    site.login = throttled_login
