//! Carts and their lines in Postgres.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{cart_items, carts};
use super::DbError;
use crate::domain::cart::{CartStatus, CustomerId, LineChange};
use crate::domain::Sku;

/// A cart row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct CartRecord {
    pub cart_id: Uuid,
    pub customer_id: String,
    #[diesel(deserialize_as = String)]
    pub status: CartStatus,
    pub order_id: Option<Uuid>,
}

/// Why a cart change, or claiming a cart for an order, was refused.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error("unknown cart")]
    NotFound,
    #[error("the cart already produced order {0}")]
    Ordered(Uuid),
    #[error("the cart belongs to another customer")]
    WrongCustomer,
    /// Only when the cart is claimed for an order.
    #[error("the cart is empty")]
    Empty,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for CartError {
    fn from(e: diesel::result::Error) -> Self {
        CartError::Db(DbError::Query(e))
    }
}

const COLUMNS: (
    carts::cart_id,
    carts::customer_id,
    carts::status,
    carts::order_id,
) = (
    carts::cart_id,
    carts::customer_id,
    carts::status,
    carts::order_id,
);

/// Opens a new cart for a customer.
pub fn create(conn: &mut PgConnection, customer: &CustomerId) -> Result<CartRecord, DbError> {
    Ok(diesel::insert_into(carts::table)
        .values((
            carts::cart_id.eq(Uuid::new_v4()),
            carts::customer_id.eq(customer.as_str()),
        ))
        .returning(COLUMNS)
        .get_result(conn)?)
}

/// The cart with this id, created for `customer` if it does not exist yet (carts announced by
/// other systems on `carts.events`). Refused if it exists for another customer.
pub fn ensure(
    conn: &mut PgConnection,
    cart_id: Uuid,
    customer: &CustomerId,
) -> Result<CartRecord, CartError> {
    diesel::insert_into(carts::table)
        .values((
            carts::cart_id.eq(cart_id),
            carts::customer_id.eq(customer.as_str()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    let cart = find(conn, cart_id)?.ok_or(CartError::NotFound)?;
    if cart.customer_id != customer.as_str() {
        return Err(CartError::WrongCustomer);
    }
    Ok(cart)
}

pub fn find(conn: &mut PgConnection, cart_id: Uuid) -> Result<Option<CartRecord>, DbError> {
    Ok(carts::table
        .find(cart_id)
        .select(COLUMNS)
        .first(conn)
        .optional()?)
}

/// A cart with its lines: `(sku, quantity)` in the order they were added.
pub type CartWithLines = (CartRecord, Vec<(String, i64)>);

/// The cart with its lines, if it exists.
pub fn find_with_lines(
    conn: &mut PgConnection,
    cart_id: Uuid,
) -> Result<Option<CartWithLines>, DbError> {
    let Some(cart) = find(conn, cart_id)? else {
        return Ok(None);
    };
    let lines = lines(conn, cart_id)?;
    Ok(Some((cart, lines)))
}

/// The cart row, locked until the transaction ends.
fn lock(conn: &mut PgConnection, cart_id: Uuid) -> Result<CartRecord, CartError> {
    carts::table
        .find(cart_id)
        .select(COLUMNS)
        .for_update()
        .first(conn)
        .optional()?
        .ok_or(CartError::NotFound)
}

/// Sets or removes one line of an open cart, in one transaction with the cart row locked.
pub fn change_line(
    conn: &mut PgConnection,
    cart_id: Uuid,
    sku: &Sku,
    change: LineChange,
) -> Result<(), CartError> {
    conn.transaction(|conn| {
        let cart = lock(conn, cart_id)?;
        if let Some(order) = cart.order_id {
            return Err(CartError::Ordered(order));
        }
        match change {
            LineChange::Set(quantity) => {
                diesel::insert_into(cart_items::table)
                    .values((
                        cart_items::cart_id.eq(cart_id),
                        cart_items::sku.eq(sku.as_str()),
                        cart_items::quantity.eq(quantity),
                    ))
                    .on_conflict((cart_items::cart_id, cart_items::sku))
                    .do_update()
                    .set((
                        cart_items::quantity.eq(quantity),
                        cart_items::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)?;
            }
            LineChange::Remove => {
                diesel::delete(
                    cart_items::table
                        .filter(cart_items::cart_id.eq(cart_id))
                        .filter(cart_items::sku.eq(sku.as_str())),
                )
                .execute(conn)?;
            }
        }
        diesel::update(carts::table.find(cart_id))
            .set(carts::updated_at.eq(diesel::dsl::now))
            .execute(conn)?;
        Ok(())
    })
}

/// Turns an open cart into `order_id`'s and returns its lines; idempotent for the same order.
/// A cart produces one order only.
pub fn claim(
    conn: &mut PgConnection,
    cart_id: Uuid,
    customer: &str,
    order_id: Uuid,
) -> Result<Vec<(String, i64)>, CartError> {
    conn.transaction(|conn| {
        let cart = lock(conn, cart_id)?;
        if cart.customer_id != customer {
            return Err(CartError::WrongCustomer);
        }
        match cart.order_id {
            Some(o) if o != order_id => return Err(CartError::Ordered(o)),
            Some(_) => return Ok(lines(conn, cart_id)?),
            None => {}
        }
        let found = lines(conn, cart_id)?;
        if found.is_empty() {
            return Err(CartError::Empty);
        }
        diesel::update(carts::table.find(cart_id))
            .set((
                carts::status.eq(CartStatus::Ordered.as_str()),
                carts::order_id.eq(Some(order_id)),
                carts::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        Ok(found)
    })
}

/// A cart's lines, in the order they were added: `(sku, quantity)`.
pub fn lines(conn: &mut PgConnection, cart_id: Uuid) -> Result<Vec<(String, i64)>, DbError> {
    Ok(cart_items::table
        .filter(cart_items::cart_id.eq(cart_id))
        .order((cart_items::added_at, cart_items::sku))
        .select((cart_items::sku, cart_items::quantity))
        .load(conn)?)
}
