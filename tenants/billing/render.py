"""An invoice as JSON, CSV and PDF (fpdf2: pure Python, maintained, no system libraries)."""

from __future__ import annotations

import csv
import io
from typing import Any

from fpdf import FPDF

from tenants.billing.models import Invoice


def money(amount: int, currency: str) -> str:
    """Minor units as `12.34 EUR` (every currency the plans use has two decimals)."""
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole}.{cents:02d} {currency}"


def as_dict(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": str(invoice.id),
        "tenant": str(invoice.tenant_id),
        "period": invoice.period,
        "plan": invoice.plan,
        "currency": invoice.currency,
        "total": invoice.total,
        "issued_at": invoice.issued_at.isoformat(),
        "usage": invoice.usage,
        "lines": [
            {
                "kind": line.kind,
                "description": line.description,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "unit": line.unit,
                "amount": line.amount,
            }
            for line in invoice.lines.all()
        ],
    }


def as_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "invoice",
            "period",
            "kind",
            "description",
            "quantity",
            "unit_price",
            "unit",
            "amount",
            "currency",
        ]
    )
    for line in invoice.lines.all():
        writer.writerow(
            [
                invoice.id,
                invoice.period,
                line.kind,
                _cell(line.description),
                line.quantity,
                line.unit_price,
                line.unit,
                line.amount,
                invoice.currency,
            ]
        )
    writer.writerow(
        [invoice.id, invoice.period, "total", "", "", "", "", invoice.total, invoice.currency]
    )
    return out.getvalue()


def _cell(text: str) -> str:
    """No spreadsheet formula injection from a description."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def as_pdf(invoice: Invoice, *, tenant_name: str, trust_domain: str) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice.period}")
    pdf.set_author("Hallmark")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=18)
    pdf.cell(0, 12, "Hallmark invoice", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Invoice", str(invoice.id)),
        ("Period", invoice.period),
        ("Customer", _latin1(tenant_name)),
        ("Trust domain", _latin1(trust_domain)),
        ("Plan", invoice.plan or "none"),
        ("Issued", invoice.issued_at.strftime("%Y-%m-%d")),
    ):
        pdf.cell(35, 6, f"{label}:")
        pdf.cell(0, 6, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    widths = (95, 30, 30, 35)
    pdf.set_font("Helvetica", style="B", size=10)
    for width, title in zip(
        widths, ("Description", "Quantity", "Unit price", "Amount"), strict=True
    ):
        pdf.cell(width, 7, title, border="B", align="L" if title == "Description" else "R")
    pdf.ln()
    pdf.set_font("Helvetica", size=10)
    for line in invoice.lines.all():
        unit = f" /{line.unit}" if line.unit != 1 else ""
        pdf.cell(widths[0], 7, _latin1(line.description)[:60])
        pdf.cell(widths[1], 7, str(line.quantity), align="R")
        pdf.cell(widths[2], 7, money(line.unit_price, invoice.currency) + unit, align="R")
        pdf.cell(widths[3], 7, money(line.amount, invoice.currency), align="R")
        pdf.ln()
    pdf.set_font("Helvetica", style="B", size=11)
    pdf.cell(sum(widths[:3]), 9, "Total", border="T")
    pdf.cell(widths[3], 9, money(invoice.total, invoice.currency), border="T", align="R")
    return bytes(pdf.output())


def _latin1(text: str) -> str:
    """The core PDF fonts speak Latin-1: anything else becomes '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")
