//! A raw SQL statement the connection prepares once (issue 19: the hot batch statements).

/// A constant SQL statement (a `sql_query` with its binds) that the connection may prepare once
/// and keep in its statement cache: diesel never caches a `sql_query` (its text might be built
/// at run time), so a hot batch statement would be parsed and planned on every call. Only for
/// statements whose text is a constant — each distinct text is kept for the connection's life —
/// and whose plan does not depend on a table's size: after five runs PostgreSQL may keep a
/// generic plan, made with the statistics of that moment. Used for the stock batch (checked:
/// with 10,000 SKUs its generic plan is an index scan of `stock` by SKU; planned while `stock`
/// holds a handful of rows it may scan it whole until autovacuum's next `ANALYZE` replans it)
/// and for plain inserts from arrays. A statement that looks up `orders` or `checkout_keys`
/// is prepared only in a form that leaves the planner no join to choose (a `LATERAL … LIMIT 1`
/// or an `OFFSET 0` subplan: one unique-index probe per row): as plain joins, planned while
/// those tables were empty, they kept scanning them whole — PostgreSQL's CPU per order +40 % in
/// a closed-loop run. (`apply_transitions` and `settle` are neither, and stay unprepared: each is planned with
/// its batch's ids as an array, so its rows of `orders` are found by index.)
///
/// A schema change that alters the type of a column such a statement returns makes PostgreSQL
/// refuse it on that connection ("cached plan must not change result type"): that is transient,
/// and the writers make the connection prepare its statements again
/// ([`super::forget_statements_if_stale`]). A pooler in transaction mode between the service and
/// PostgreSQL would break prepared statements altogether: it is not supported.
pub(crate) struct Prepared<Q>(pub Q);

impl<Q: diesel::query_builder::QueryFragment<diesel::pg::Pg>>
    diesel::query_builder::QueryFragment<diesel::pg::Pg> for Prepared<Q>
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &diesel::pg::Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> diesel::query_builder::Query for Prepared<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q, Conn> diesel::RunQueryDsl<Conn> for Prepared<Q> {}
