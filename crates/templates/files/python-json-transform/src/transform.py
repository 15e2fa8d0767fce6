"""A data function: turns an order into a normalized summary.

Input:  {"customer": " Ada ", "items": [{"sku": "a-1", "price": "2.50", "qty": 2}, ...]}
Output: {"customer": "Ada", "lines": [...], "total": 5.0, "count": 2}
Bad input raises ValueError, which the caller gets as a Lambda-shaped error (HTTP 502).
"""

from decimal import Decimal, InvalidOperation


def _line(i, item):
    if not isinstance(item, dict):
        raise ValueError(f"items[{i}] must be an object")
    sku = str(item.get("sku", "")).strip().upper()
    if not sku:
        raise ValueError(f"items[{i}].sku is missing")
    try:
        price = Decimal(str(item.get("price", "0")))
        qty = int(item.get("qty", 1))
    except (InvalidOperation, ValueError, TypeError):
        raise ValueError(f"items[{i}]: price must be a number and qty an integer")
    if price < 0 or qty < 1:
        raise ValueError(f"items[{i}]: price must be >= 0 and qty >= 1")
    return {"sku": sku, "qty": qty, "amount": float(price * qty)}


def handler(event, context):
    if not isinstance(event, dict) or not isinstance(event.get("items"), list):
        raise ValueError('expected {"customer": ..., "items": [...]}')
    lines = [_line(i, item) for i, item in enumerate(event["items"])]
    return {
        "customer": str(event.get("customer", "")).strip(),
        "lines": lines,
        "count": sum(line["qty"] for line in lines),
        "total": round(sum(line["amount"] for line in lines), 2),
    }
