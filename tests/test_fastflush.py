"""Transactional tests end with the public tables emptied (tests/fastflush.py), as Django's
flush left them, content types and permissions kept. The two tests run in this order (one
file: one xdist group, file order)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType

from tenants.models import Tenant
from tests.conftest import make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_transactional_test_leaves_rows_in_public_tables() -> None:
    make_tenant("flush")
    assert Tenant.objects.exists()


def test_the_next_one_finds_them_emptied_and_content_types_kept() -> None:
    from django.contrib.auth import get_user_model

    assert not Tenant.objects.exists()
    assert not get_user_model().objects.exists()
    assert ContentType.objects.filter(app_label="tenants").exists()
    assert Permission.objects.exists()
