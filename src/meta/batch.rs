//! Statements sent to the database together. Through sqlx's SQLite driver
//! every statement is a round trip to the connection's own thread (a
//! wake-up and a context switch each way), and those trips, not SQLite's
//! work, were most of what a manifest push cost. SQLite runs all the
//! statements of one query string in one trip, `$n` naming the string's
//! n-th argument whichever statement it is in; PostgreSQL prepares one
//! statement at a time, so there each runs on its own.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, Arguments as _};

use crate::core::{RegistryError, Result};
use crate::meta::Dialect;

/// SQLite takes at most 32,766 arguments to a query string; a batch with
/// more runs statement by statement.
const MOST_ARGUMENTS_AT_ONCE: usize = 30_000;

/// Statements run in order, within the caller's transaction. Arguments
/// are borrowed until the batch runs: sqlx copies each once, as it would
/// for a single statement.
#[derive(Default)]
pub(crate) struct Batch<'a> {
    statements: Vec<Statement<'a>>,
}

/// One statement, its placeholders numbered `$1`, `$2`... in the order
/// of its binds.
pub(crate) struct Statement<'a> {
    sql: String,
    params: Vec<Param<'a>>,
}

enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bytes(&'a [u8]),
}

impl<'a> Batch<'a> {
    /// Adds a statement; bind its arguments on what this returns.
    pub(crate) fn push(&mut self, sql: impl Into<String>) -> &mut Statement<'a> {
        self.statements.push(Statement {
            sql: sql.into(),
            params: Vec::new(),
        });
        self.statements.last_mut().expect("just pushed")
    }

    /// Runs every statement; the first row the last one returns, if any.
    /// Only the last statement may return rows.
    pub(crate) async fn run(
        self,
        conn: &mut AnyConnection,
        dialect: Dialect,
    ) -> Result<Option<AnyRow>> {
        let arguments: usize = self.statements.iter().map(|s| s.params.len()).sum();
        if dialect == Dialect::Sqlite && arguments <= MOST_ARGUMENTS_AT_ONCE {
            let mut sql = String::new();
            let mut args = AnyArguments::default();
            for statement in self.statements {
                sql.push_str(&renumber(&statement.sql, args.len()));
                sql.push_str(";\n");
                for param in statement.params {
                    param.add_to(&mut args)?;
                }
            }
            // Only placeholders are rewritten; every value is bound. (Not
            // `fetch_optional`: through sqlx's Any driver it looks only at
            // the first statement's outcome.)
            let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .fetch_all(conn)
                .await?;
            return Ok(rows.into_iter().next());
        }
        let mut last = None;
        for statement in self.statements {
            let mut args = AnyArguments::default();
            for param in statement.params {
                param.add_to(&mut args)?;
            }
            last = sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), args)
                .fetch_optional(&mut *conn)
                .await?;
        }
        Ok(last)
    }
}

impl<'a> Statement<'a> {
    pub(crate) fn text(&mut self, value: &'a str) -> &mut Statement<'a> {
        self.params.push(Param::Text(Some(value)));
        self
    }

    pub(crate) fn opt_text(&mut self, value: Option<&'a str>) -> &mut Statement<'a> {
        self.params.push(Param::Text(value));
        self
    }

    pub(crate) fn int(&mut self, value: i64) -> &mut Statement<'a> {
        self.params.push(Param::Int(Some(value)));
        self
    }

    pub(crate) fn opt_int(&mut self, value: Option<i64>) -> &mut Statement<'a> {
        self.params.push(Param::Int(value));
        self
    }

    pub(crate) fn bytes(&mut self, value: &'a [u8]) -> &mut Statement<'a> {
        self.params.push(Param::Bytes(value));
        self
    }
}

impl Param<'_> {
    fn add_to(self, args: &mut AnyArguments) -> Result<()> {
        match self {
            Param::Text(v) => args.add(v),
            Param::Int(v) => args.add(v),
            Param::Bytes(v) => args.add(v),
        }
        .map_err(|e| RegistryError::Internal(format!("binding an argument: {e}")))
    }
}

/// `sql` with every `$n` made `$(n + offset)`. Statements here hold no
/// `$` but in placeholders (no string literals with one, no dollar
/// quoting).
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_move_past_the_earlier_statements_arguments() {
        assert_eq!(
            renumber("INSERT INTO t VALUES ($1, $2, $10)", 3),
            "INSERT INTO t VALUES ($4, $5, $13)"
        );
        assert_eq!(renumber("SELECT $1", 0), "SELECT $1");
        assert_eq!(renumber("SELECT 1", 7), "SELECT 1");
    }
}
