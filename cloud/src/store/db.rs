//! The SQL the store speaks, over either engine: SQLite (one file, the default) or
//! PostgreSQL (several cloud instances on one database).
//!
//! The store's queries are written once, in the SQL both engines share, with SQLite's
//! numbered placeholders (`?1`, or `?` for the next number); [`Sql`] runs them on a SQLite
//! connection or a PostgreSQL transaction, translating the placeholders for PostgreSQL.
//! Where the engines differ (JSON functions, string aggregation, DDL types) the caller asks
//! [`Sql::dialect`] and writes both. Values cross as [`Arg`] (in) and [`Val`] (out), the
//! five SQLite storage classes; PostgreSQL columns are BIGINT, DOUBLE PRECISION, TEXT and
//! BYTEA to match, and an integer argument is narrowed to what a parameter's type is.

use std::borrow::Cow;
use std::collections::HashMap;

use super::StoreError;

/// Which engine a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A query argument.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

/// What can be passed as an [`Arg`]; `args![…]` takes anything that implements it.
pub(crate) trait ToArg {
    fn to_arg(&self) -> Arg<'_>;
}

impl ToArg for Arg<'_> {
    fn to_arg(&self) -> Arg<'_> {
        match self {
            Arg::Null => Arg::Null,
            Arg::Int(n) => Arg::Int(*n),
            Arg::Real(x) => Arg::Real(*x),
            Arg::Text(s) => Arg::Text(Cow::Borrowed(s)),
            Arg::Blob(b) => Arg::Blob(Cow::Borrowed(b)),
        }
    }
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_arg(&self) -> Arg<'_> {
        (**self).to_arg()
    }
}

impl<T: ToArg> ToArg for Option<T> {
    fn to_arg(&self) -> Arg<'_> {
        self.as_ref().map_or(Arg::Null, ToArg::to_arg)
    }
}

impl ToArg for str {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(Cow::Borrowed(self))
    }
}

impl ToArg for String {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(Cow::Borrowed(self))
    }
}

impl ToArg for [u8] {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Blob(Cow::Borrowed(self))
    }
}

impl ToArg for Vec<u8> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Blob(Cow::Borrowed(self))
    }
}

impl ToArg for i64 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(*self)
    }
}

impl ToArg for u32 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}

impl ToArg for u8 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}

impl ToArg for bool {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}

impl ToArg for f64 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Real(*self)
    }
}

/// `args![a, b, …]`: a slice of query arguments, each borrowed from its expression.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$($crate::store::db::ToArg::to_arg(&$x)),*] as &[$crate::store::db::Arg<'_>]
    };
}
pub(crate) use args;

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A result row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub Vec<Val>);

impl Row {
    /// Column `i` as a `T`; an error naming the column when it is missing or of another type.
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T, StoreError> {
        let v = self.0.get(i).unwrap_or(&Val::Null);
        T::from_val(v).ok_or_else(|| {
            StoreError::Database(format!(
                "column {i} holds {v:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// What a [`Val`] can be read as.
pub(crate) trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl FromVal for u32 {
    fn from_val(v: &Val) -> Option<Self> {
        i64::from_val(v).and_then(|n| u32::try_from(n).ok())
    }
}

impl FromVal for u8 {
    fn from_val(v: &Val) -> Option<Self> {
        i64::from_val(v).and_then(|n| u8::try_from(n).ok())
    }
}

impl FromVal for bool {
    fn from_val(v: &Val) -> Option<Self> {
        i64::from_val(v).map(|n| n != 0)
    }
}

impl FromVal for f64 {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Real(x) => Some(*x),
            #[allow(clippy::cast_precision_loss)] // reason: SQLite stores whole reals as integers
            Val::Int(n) => Some(*n as f64),
            _ => None,
        }
    }
}

impl FromVal for String {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromVal for Vec<u8> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Null => Some(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// A connection or transaction the store's queries run on.
pub(crate) trait Sql {
    /// The engine.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError>;
    /// Runs a query; every row.
    fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Runs statements without arguments (DDL).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;

    /// The first row, if any.
    fn row(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// The one row an aggregate returns.
    fn one(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Row, StoreError> {
        self.row(sql, args)?
            .ok_or_else(|| StoreError::Database(format!("no row from {sql}")))
    }
}

/// A SQLite connection (or transaction, through its `Deref`) as [`Sql`].
pub(crate) struct Lite<'c>(pub &'c rusqlite::Connection);

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Null => ValueRef::Null,
            Arg::Int(n) => ValueRef::Integer(*n),
            Arg::Real(x) => ValueRef::Real(*x),
            Arg::Text(s) => ValueRef::Text(s.as_bytes()),
            Arg::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let n = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(n) => Val::Int(n),
                    ValueRef::Real(x) => Val::Real(x),
                    ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.0.execute_batch(sql)?;
        Ok(())
    }
}

/// A PostgreSQL connection with the statements it has prepared, by their SQLite text.
pub(crate) struct PgConn {
    pub client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client,
            statements: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("statements", &self.statements.len())
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL transaction as [`Sql`].
pub(crate) struct PgTx<'c> {
    pub tx: postgres::Transaction<'c>,
    statements: &'c mut HashMap<String, postgres::Statement>,
}

impl<'c> PgTx<'c> {
    /// Begins a transaction on `conn`; `read_only` ones see one snapshot throughout.
    pub fn begin(conn: &'c mut PgConn, read_only: bool) -> Result<PgTx<'c>, StoreError> {
        let PgConn { client, statements } = conn;
        let tx = if read_only {
            client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?
        } else {
            client.transaction()?
        };
        Ok(PgTx { tx, statements })
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(&to_postgres(sql))?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

fn pg_params<'a>(args: &'a [Arg<'_>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Sql for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        Ok(self.tx.execute(&stmt, &pg_params(args))?)
    }

    fn rows(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self.tx.query(&stmt, &pg_params(args))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Val>(i).map_err(StoreError::from))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.batch_execute(sql)?;
        Ok(())
    }
}

/// A JSON text column's field `key` as SQL text or number, in `dialect`.
pub(crate) fn json_field(dialect: Dialect, column: &str, key: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
        Dialect::Postgres => format!("(CAST({column} AS jsonb) ->> '{key}')"),
    }
}

/// SQLite's placeholders as PostgreSQL's: `?N` → `$N`, a bare `?` → the next number after
/// the largest so far (SQLite's rule). String literals are copied as they are.
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut largest = 0u32;
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            in_string = c != '\'';
            continue;
        }
        match c {
            '\'' => {
                in_string = true;
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse().unwrap_or(largest + 1);
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            c => out.push(c),
        }
    }
    out
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl postgres::types::ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, BoxError> {
        use postgres::types::{IsNull, Type};
        let mismatch = || -> BoxError { format!("{self:?} for a parameter of type {ty}").into() };
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                #[allow(clippy::cast_precision_loss)] // reason: a whole number into a real column
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Arg::Real(x) => match *ty {
                Type::FLOAT8 => x.to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Arg::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_ref().to_sql(ty, out)
                }
                _ => Err(mismatch()),
            },
            Arg::Blob(b) => match *ty {
                Type::BYTEA => b.as_ref().to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> postgres::types::FromSql<'a> for Val {
    fn from_sql(ty: &postgres::types::Type, raw: &'a [u8]) -> Result<Val, BoxError> {
        use postgres::types::Type;
        Ok(match *ty {
            Type::INT8 => Val::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Val::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Val::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Val::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Val::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Val::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Val::Blob(Vec::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Val::Text(String::from_sql(ty, raw)?)
            }
            _ => {
                return Err(format!("a column of type {ty}, which the store does not read").into());
            }
        })
    }

    fn from_sql_null(_: &postgres::types::Type) -> Result<Val, BoxError> {
        Ok(Val::Null)
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn placeholders_translate_as_sqlite_numbers_them() {
        assert_eq!(to_postgres("a = ?1 AND b = ?2"), "a = $1 AND b = $2");
        assert_eq!(to_postgres("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(
            to_postgres("a = ?3 AND b IN (?, ?)"),
            "a = $3 AND b IN ($4, $5)"
        );
        assert_eq!(to_postgres("x = '?1' AND y = ?1"), "x = '?1' AND y = $1");
        assert_eq!(to_postgres("?10, ?2"), "$10, $2");
    }
}
