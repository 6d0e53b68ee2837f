//! Mock brokerage JSON API: `GET /v1/quotes/{symbol}`, `POST /v1/orders`,
//! `GET /v1/orders/{id}`; every call needs `Authorization: Bearer …`.
use hyper::StatusCode;
use serde_json::{json, Value};
use sha2::Digest as _;

use super::body::Plan;
use super::log::lock;
use super::server::{error_plan, Ctx, Kind};

fn authorized(ctx: &Ctx) -> Result<(), Plan> {
    let ok = ctx
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty());
    if ok {
        Ok(())
    } else {
        Err(error_plan(
            Kind::Broker,
            StatusCode::UNAUTHORIZED,
            "missing or malformed bearer token",
        )
        .header("www-authenticate", "Bearer realm=\"broker\""))
    }
}

/// A deterministic price for a symbol, in cents.
fn price_cents(symbol: &str) -> u64 {
    let d = sha2::Sha256::digest(symbol.as_bytes());
    1_000 + u64::from(u16::from_be_bytes([d[0], d[1]])) % 49_000
}

fn dollars(cents: u64) -> Value {
    json!(cents as f64 / 100.0)
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.len() <= 12 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

pub(crate) fn quote(ctx: &Ctx) -> Plan {
    if let Err(p) = authorized(ctx) {
        return p;
    }
    let symbol = ctx
        .path
        .trim_start_matches("/v1/quotes/")
        .to_ascii_uppercase();
    if !valid_symbol(&symbol) {
        return error_plan(
            Kind::Broker,
            StatusCode::NOT_FOUND,
            &format!("unknown symbol {symbol:?}"),
        );
    }
    let last = price_cents(&symbol);
    Plan::json(
        StatusCode::OK,
        &json!({"symbol": symbol, "bid": dollars(last - 1), "ask": dollars(last + 1),
                "last": dollars(last), "currency": "USD"}),
    )
}

pub(crate) fn order(ctx: &Ctx) -> Plan {
    if let Err(p) = authorized(ctx) {
        return p;
    }
    let unprocessable = |m: &str| error_plan(Kind::Broker, StatusCode::UNPROCESSABLE_ENTITY, m);
    let req = match ctx.json() {
        Ok(v) => v,
        Err(e) => return error_plan(Kind::Broker, StatusCode::BAD_REQUEST, &e),
    };
    let symbol = req["symbol"].as_str().unwrap_or("").to_ascii_uppercase();
    if !valid_symbol(&symbol) {
        return unprocessable("symbol: required, letters and digits");
    }
    let Some(qty) = req["qty"]
        .as_u64()
        .or_else(|| req["quantity"].as_u64())
        .filter(|q| *q > 0)
    else {
        return unprocessable("qty: required, a positive integer");
    };
    let side = req["side"].as_str().unwrap_or("");
    if side != "buy" && side != "sell" {
        return unprocessable("side: required, \"buy\" or \"sell\"");
    }
    let price = match req.get("limit_price").and_then(Value::as_f64) {
        Some(p) if p > 0.0 => json!(p),
        Some(_) => return unprocessable("limit_price: must be positive"),
        None => dollars(price_cents(&symbol)),
    };
    let mut orders = lock(&ctx.shared.orders);
    let n = orders.len() as u64 + 1;
    let order = json!({
        "id": format!("ord_{n:06}"),
        "status": "filled",
        "symbol": symbol,
        "qty": qty,
        "side": side,
        "type": if req.get("limit_price").is_some() { "limit" } else { "market" },
        "filled_price": price,
        "created_at": 1_750_000_000 + n,
        "client_order_id": req.get("client_order_id").cloned().unwrap_or(Value::Null),
    });
    orders.push(order.clone());
    Plan::json(StatusCode::CREATED, &order).header("location", format!("/v1/orders/ord_{n:06}"))
}

pub(crate) fn get_order(ctx: &Ctx) -> Plan {
    if let Err(p) = authorized(ctx) {
        return p;
    }
    let id = ctx.path.trim_start_matches("/v1/orders/");
    match lock(&ctx.shared.orders).iter().find(|o| o["id"] == id) {
        Some(o) => Plan::json(StatusCode::OK, o),
        None => error_plan(
            Kind::Broker,
            StatusCode::NOT_FOUND,
            &format!("no order {id}"),
        ),
    }
}
