"""Plans as data the operator edits (`/api/v1/operator/plans`)."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction

from hallmark.errors import HallmarkError
from tenants.billing.models import Plan
from tenants.services import record_audit

PLAN_FIELDS = (
    "display_name",
    "currency",
    "price_per_month",
    "max_agents",
    "max_entries",
    "max_svids_per_month",
    "svid_overage_price",
    "svid_overage_unit",
)


class PlanNotFound(HallmarkError):
    code = "not_found"
    http_status = 404


class PlanExists(HallmarkError):
    code = "plan_exists"
    http_status = 409


def list_plans() -> list[Plan]:
    connection.set_schema_to_public()
    return list(Plan.objects.order_by("price_per_month", "name"))


def get_plan(name: str) -> Plan:
    connection.set_schema_to_public()
    plan = Plan.objects.filter(name=name).first()
    if plan is None:
        raise PlanNotFound(f"no plan {name!r}")
    return plan


def create_plan(*, name: str, fields: dict[str, Any], actor: str, source: str = "") -> Plan:
    connection.set_schema_to_public()
    with transaction.atomic():
        if Plan.objects.filter(name=name).exists():
            raise PlanExists(f"plan {name!r} exists already")
        plan = Plan.objects.create(name=name, **{k: fields[k] for k in PLAN_FIELDS if k in fields})
        record_audit(
            tenant=None,
            actor=actor,
            action="plan.create",
            target=name,
            source=source,
            detail={k: getattr(plan, k) for k in PLAN_FIELDS},
        )
    return plan


def change_plan(*, name: str, changes: dict[str, Any], actor: str, source: str = "") -> Plan:
    connection.set_schema_to_public()
    with transaction.atomic():
        plan = Plan.objects.select_for_update().filter(name=name).first()
        if plan is None:
            raise PlanNotFound(f"no plan {name!r}")
        changed = {}
        for key in PLAN_FIELDS:
            if key in changes and getattr(plan, key) != changes[key]:
                changed[key] = {"from": getattr(plan, key), "to": changes[key]}
                setattr(plan, key, changes[key])
        plan.save()
        record_audit(
            tenant=None,
            actor=actor,
            action="plan.update",
            target=name,
            source=source,
            detail={"changed": changed},
        )
    return plan


def plan_exists(name: str) -> bool:
    return not name or Plan.objects.filter(name=name).exists()
