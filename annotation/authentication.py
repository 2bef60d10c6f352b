"""API token authentication for the labeling hot path.

DRF's ``TokenAuthentication`` with the lookup as one raw join instead of an ORM
``select_related().get()``: every labeling request authenticates, and compiling that query cost
more than PostgreSQL spent answering it. Same tokens, same answers, same errors; still one query
per request, so a deleted token or a deactivated user is refused on the very next request
(no cache to go stale).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


class FastTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        User = get_user_model()
        users = list(
            User.objects.raw(
                f"SELECT u.* FROM {User._meta.db_table} u JOIN {Token._meta.db_table} t ON t.user_id = u.{User._meta.pk.column} "
                "WHERE t.key = %s",
                [key],
            )
        )
        if not users:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = users[0]
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, Token(key=key, user=user)
