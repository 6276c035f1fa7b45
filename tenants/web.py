"""The web login: a plain Django form that signs a user in with a session cookie (+ CSRF).

The console pages go behind it. The checks are the API's (tenants.accounts): the same
`invalid_credentials` answer for an unknown email and a wrong password, the same failure
counts per account and per address, the same audit rows.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from rest_framework.exceptions import Throttled

from tenants import accounts
from tenants.api.errors import ApiError


class LoginForm(forms.Form):
    email = forms.EmailField(max_length=254)
    password = forms.CharField(max_length=200, widget=forms.PasswordInput)


def _next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


@require_http_methods(["GET", "POST"])
def login_page(request: HttpRequest) -> HttpResponse:
    from django.shortcuts import render

    form = LoginForm(request.POST or None)
    context: dict[str, object] = {"form": form, "next": _next(request), "error": ""}
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            user = accounts.authenticate(
                form.cleaned_data["email"], form.cleaned_data["password"], request
            )
        except Throttled as limited:
            response = render(
                request,
                "tenants/login.html",
                {**context, "error": "Too many failed sign-ins; try again later."},
                status=429,
            )
            response["Retry-After"] = str(int(limited.wait or 1))
            return response
        except ApiError as refused:
            context["error"] = (
                "Wrong email or password."
                if refused.error_code == "invalid_credentials"
                else str(refused.detail)
            )
            status = refused.status_code
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            accounts.audit_web_login(user, request)
            target = _next(request)
            if target:
                return HttpResponseRedirect(target)
            return HttpResponseRedirect(request.path)
    elif request.method == "POST":
        status = 400
    if request.user.is_authenticated:
        context["user_email"] = request.user.get_username()
    return render(request, "tenants/login.html", context, status=status)


@require_http_methods(["POST"])
def logout_page(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponseRedirect("/login")
