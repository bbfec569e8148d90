//! Statements about who may do what, in Postgres's forms: `CREATE`,
//! `ALTER` and `DROP ROLE|USER`, `GRANT` and `REVOKE` of privileges, and
//! `SET ROLE` and `SET SESSION AUTHORIZATION`.

use std::fmt;

use std::ops::ControlFlow;

use crate::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, ObjectName, TableFactor, Value, Visit, Visitor,
};
use crate::sqlparser::parser::Parser;
use crate::sqlparser::tokenizer::Token;

use crate::create_table::normalize;
use crate::{Result, SqlError};

const PUBLIC_SCHEMA: &str = "public";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessStatement {
    /// `CREATE ROLE|USER name [WITH] option ...`; `user` makes `LOGIN`
    /// the default.
    CreateRole {
        name: String,
        user: bool,
        options: RoleOptions,
    },
    /// `ALTER ROLE|USER name [WITH] option ...` or `... RENAME TO new`.
    AlterRole {
        name: String,
        options: RoleOptions,
        rename: Option<String>,
    },
    /// `DROP ROLE|USER [IF EXISTS] name, ...`.
    DropRole { names: Vec<String>, if_exists: bool },
    /// `GRANT ... TO` or `REVOKE ... FROM`.
    Grant(Grant),
    /// `SET ROLE name`; `None` for `SET ROLE NONE` and `RESET ROLE`.
    SetRole(Option<String>),
    /// `SET SESSION AUTHORIZATION name`; `None` for `DEFAULT` and `RESET`.
    SetSessionAuthorization(Option<String>),
}

/// Role attributes a statement sets; its password is as written (the
/// server stores a verifier of it).
pub use eddy_catalog::roles::RoleOptions;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `GRANT` (true) or `REVOKE`.
    pub grant: bool,
    /// Privilege names in upper case; `None` for `ALL [PRIVILEGES]`.
    pub privileges: Option<Vec<String>>,
    pub on: GrantOn,
    pub grantees: Vec<Grantee>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantOn {
    /// `[TABLE] name, ...`: tables, streams and views.
    Relations(Vec<String>),
    /// `ALL TABLES IN SCHEMA public`.
    AllRelations,
    /// `DATABASE name`.
    Database(String),
    /// `SCHEMA name`.
    Schema(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    Public,
    Role(String),
}

fn word(parser: &mut Parser, word: &str) -> bool {
    match &parser.peek_token_ref().token {
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
            parser.next_token();
            true
        }
        _ => false,
    }
}

fn expect(parser: &mut Parser, expected: &str) -> Result<()> {
    match word(parser, expected) {
        true => Ok(()),
        false => Ok(parser.expected(expected, parser.peek_token())?),
    }
}

fn name(parser: &mut Parser) -> Result<String> {
    Ok(normalize(&parser.parse_identifier()?))
}

fn names(parser: &mut Parser) -> Result<Vec<String>> {
    let mut names = vec![name(parser)?];
    while parser.consume_token(&Token::Comma) {
        names.push(name(parser)?);
    }
    Ok(names)
}

/// A relation name, `public.` allowed before it.
fn relation_name(parser: &mut Parser) -> Result<String> {
    let object = parser.parse_object_name(false)?;
    let parts: Vec<String> = object
        .0
        .iter()
        .map(|p| p.as_ident().map(normalize).unwrap_or_else(|| p.to_string()))
        .collect();
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] if schema == PUBLIC_SCHEMA => Ok(name.clone()),
        _ => Err(SqlError::UndefinedRelation(object.to_string())),
    }
}

fn string(parser: &mut Parser) -> Result<String> {
    Ok(parser.parse_literal_string()?)
}

/// Parses the statement after its first word (`CREATE`, `GRANT`, ...) is
/// known to be one of these.
pub fn parse_access(parser: &mut Parser) -> Result<AccessStatement> {
    if word(parser, "CREATE") {
        let user = word(parser, "USER");
        if !user {
            expect(parser, "ROLE")?;
        }
        let name = name(parser)?;
        let options = role_options(parser)?;
        return Ok(AccessStatement::CreateRole {
            name,
            user,
            options,
        });
    }
    if word(parser, "ALTER") {
        if !word(parser, "USER") {
            expect(parser, "ROLE")?;
        }
        let name = name(parser)?;
        if word(parser, "RENAME") {
            expect(parser, "TO")?;
            let rename = Some(self::name(parser)?);
            return Ok(AccessStatement::AlterRole {
                name,
                options: RoleOptions::default(),
                rename,
            });
        }
        let options = role_options(parser)?;
        return Ok(AccessStatement::AlterRole {
            name,
            options,
            rename: None,
        });
    }
    if word(parser, "DROP") {
        if !word(parser, "USER") {
            expect(parser, "ROLE")?;
        }
        let if_exists = word(parser, "IF");
        if if_exists {
            expect(parser, "EXISTS")?;
        }
        return Ok(AccessStatement::DropRole {
            names: names(parser)?,
            if_exists,
        });
    }
    if word(parser, "GRANT") {
        return grant(parser, true).map(AccessStatement::Grant);
    }
    if word(parser, "REVOKE") {
        return grant(parser, false).map(AccessStatement::Grant);
    }
    let set = word(parser, "SET");
    if !set {
        expect(parser, "RESET")?;
    }
    let session = word(parser, "SESSION");
    if session {
        expect(parser, "AUTHORIZATION")?;
    } else {
        expect(parser, "ROLE")?;
    }
    let target = match set {
        false => None,
        true => {
            // `SET role = 'x'` and `SET role TO x` set the same thing.
            let _ = parser.consume_token(&Token::Eq) || word(parser, "TO");
            if word(parser, "DEFAULT") || (!session && word(parser, "NONE")) {
                None
            } else {
                match parser.peek_token().token {
                    Token::SingleQuotedString(_) => Some(string(parser)?),
                    _ => Some(name(parser)?),
                }
            }
        }
    };
    Ok(match session {
        true => AccessStatement::SetSessionAuthorization(target),
        false => AccessStatement::SetRole(target),
    })
}

fn role_options(parser: &mut Parser) -> Result<RoleOptions> {
    let mut options = RoleOptions::default();
    let _ = word(parser, "WITH");
    loop {
        let flag = |parser: &mut Parser, name: &str| -> Option<bool> {
            if word(parser, name) {
                Some(true)
            } else if word(parser, &format!("NO{name}")) {
                Some(false)
            } else {
                None
            }
        };
        if let Some(on) = flag(parser, "SUPERUSER") {
            options.superuser = Some(on);
        } else if let Some(on) = flag(parser, "LOGIN") {
            options.login = Some(on);
        } else if let Some(on) = flag(parser, "CREATEROLE") {
            options.create_role = Some(on);
        } else if let Some(on) = flag(parser, "CREATEDB") {
            options.create_db = Some(on);
        } else if flag(parser, "INHERIT").is_some() {
            // Roles have no members here, so there is nothing to inherit.
        } else if let Some(on) = flag(parser, "REPLICATION").or_else(|| flag(parser, "BYPASSRLS")) {
            if on {
                return Err(SqlError::Unsupported(
                    "REPLICATION and BYPASSRLS (Eddy has neither replication nor row security)"
                        .into(),
                ));
            }
        } else if word(parser, "ENCRYPTED") || word(parser, "PASSWORD") {
            // `ENCRYPTED PASSWORD` is `PASSWORD`; the verifier is all that
            // is stored either way.
            let _ = word(parser, "PASSWORD");
            options.password = Some(match parser.parse_value()?.value {
                Value::Null => None,
                Value::SingleQuotedString(p) | Value::EscapedStringLiteral(p) => Some(p),
                other => {
                    return Err(SqlError::InvalidDefinition(format!(
                        "PASSWORD takes a string or NULL, not {other}"
                    )))
                }
            });
        } else if word(parser, "CONNECTION") {
            expect(parser, "LIMIT")?;
            let _ = parser.parse_expr()?;
            return Err(SqlError::Unsupported(
                "CONNECTION LIMIT per role (--max-connections limits all)".into(),
            ));
        } else if word(parser, "VALID") {
            expect(parser, "UNTIL")?;
            return Err(SqlError::Unsupported("VALID UNTIL".into()));
        } else if word(parser, "IN") || word(parser, "ROLE") || word(parser, "ADMIN") {
            return Err(SqlError::Unsupported("role membership".into()));
        } else {
            break;
        }
    }
    if parser.peek_token_ref().token != Token::EOF {
        return Ok(parser.expected("a role option", parser.peek_token())?);
    }
    Ok(options)
}

const PRIVILEGES: [&str; 8] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "CREATE", "USAGE", "CONNECT",
];

fn grant(parser: &mut Parser, grant: bool) -> Result<Grant> {
    let privileges = if word(parser, "ALL") {
        let _ = word(parser, "PRIVILEGES");
        None
    } else {
        let mut privileges = Vec::new();
        loop {
            let Some(privilege) = PRIVILEGES.iter().find(|p| word(parser, p)) else {
                if let Token::Word(_) = parser.peek_token().token {
                    if privileges.is_empty() {
                        return Err(SqlError::Unsupported(
                            "granting roles to roles (role membership)".into(),
                        ));
                    }
                }
                return Ok(parser.expected("a privilege", parser.peek_token())?);
            };
            privileges.push((*privilege).to_owned());
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        Some(privileges)
    };
    expect(parser, "ON")?;
    let on = if word(parser, "DATABASE") {
        GrantOn::Database(name(parser)?)
    } else if word(parser, "SCHEMA") {
        GrantOn::Schema(name(parser)?)
    } else if word(parser, "ALL") {
        expect(parser, "TABLES")?;
        expect(parser, "IN")?;
        expect(parser, "SCHEMA")?;
        let schema = name(parser)?;
        if schema != PUBLIC_SCHEMA {
            return Err(SqlError::Unsupported(format!("schema \"{schema}\"")));
        }
        GrantOn::AllRelations
    } else {
        let _ = word(parser, "TABLE");
        let mut relations = vec![relation_name(parser)?];
        while parser.consume_token(&Token::Comma) {
            relations.push(relation_name(parser)?);
        }
        GrantOn::Relations(relations)
    };
    expect(parser, if grant { "TO" } else { "FROM" })?;
    let mut grantees = Vec::new();
    loop {
        let _ = word(parser, "GROUP");
        grantees.push(if word(parser, "PUBLIC") {
            Grantee::Public
        } else {
            Grantee::Role(name(parser)?)
        });
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    if grant && word(parser, "WITH") {
        expect(parser, "GRANT")?;
        expect(parser, "OPTION")?;
        return Err(SqlError::Unsupported("WITH GRANT OPTION".into()));
    }
    if !grant {
        // What was granted to others through this grant goes with it;
        // there are no grant options, so CASCADE and RESTRICT agree.
        let _ = word(parser, "CASCADE") || word(parser, "RESTRICT");
    }
    Ok(Grant {
        grant,
        privileges,
        on,
        grantees,
    })
}

/// Whether a statement starting with these words is one of these.
pub fn is_access(first: &str, second: Option<&str>, third: Option<&str>) -> bool {
    let is = |w: Option<&str>, s: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(s));
    let role = is(second, "ROLE") || is(second, "USER");
    match first.to_ascii_uppercase().as_str() {
        "CREATE" | "ALTER" | "DROP" => role,
        "GRANT" | "REVOKE" => true,
        "SET" | "RESET" => {
            is(second, "ROLE") || (is(second, "SESSION") && is(third, "AUTHORIZATION"))
        }
        _ => false,
    }
}

impl fmt::Display for AccessStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessStatement::CreateRole { name, user, .. } => {
                write!(f, "CREATE {} {name}", if *user { "USER" } else { "ROLE" })
            }
            AccessStatement::AlterRole { name, .. } => write!(f, "ALTER ROLE {name}"),
            AccessStatement::DropRole { names, .. } => write!(f, "DROP ROLE {}", names.join(", ")),
            AccessStatement::Grant(g) => f.write_str(if g.grant { "GRANT" } else { "REVOKE" }),
            AccessStatement::SetRole(_) => f.write_str("SET ROLE"),
            AccessStatement::SetSessionAuthorization(_) => f.write_str("SET SESSION AUTHORIZATION"),
        }
    }
}

/// The relations a statement or query names in its FROM clauses and
/// subqueries (and as the first argument of `TUMBLE(...)` and `HOP(...)`),
/// each once, in order. Names in other schemas (`pg_catalog.x`) are left
/// out; a CTE's name is in, and found in no catalog.
pub fn relations_named<V: Visit>(node: &V) -> Vec<String> {
    struct Names(Vec<String>);
    impl Names {
        fn add(&mut self, name: &ObjectName) {
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| p.as_ident().map(normalize).unwrap_or_else(|| p.to_string()))
                .collect();
            let relation = match parts.as_slice() {
                [name] => name,
                [schema, name] if schema == PUBLIC_SCHEMA => name,
                _ => return,
            };
            if !self.0.contains(relation) {
                self.0.push(relation.clone());
            }
        }
    }
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            self.add(relation);
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                args: Some(args), ..
            } = factor
            {
                for arg in &args.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(id))) = arg {
                        self.add(&ObjectName::from(vec![id.clone()]));
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(Vec::new());
    let _ = node.visit(&mut names);
    names.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EddyStatement;

    fn access(sql: &str) -> AccessStatement {
        match crate::parse_sql(sql).unwrap().remove(0) {
            EddyStatement::Access(access) => *access,
            other => panic!("{sql} parsed as {other:?}"),
        }
    }

    #[test]
    fn role_statements() {
        assert_eq!(
            access("CREATE USER Alice WITH PASSWORD 'pw' CREATEDB"),
            AccessStatement::CreateRole {
                name: "alice".into(),
                user: true,
                options: RoleOptions {
                    password: Some(Some("pw".into())),
                    create_db: Some(true),
                    ..RoleOptions::default()
                },
            }
        );
        assert_eq!(
            access("create role \"Bob\" nologin superuser password null"),
            AccessStatement::CreateRole {
                name: "Bob".into(),
                user: false,
                options: RoleOptions {
                    login: Some(false),
                    superuser: Some(true),
                    password: Some(None),
                    ..RoleOptions::default()
                },
            }
        );
        assert_eq!(
            access("ALTER USER alice RENAME TO carol"),
            AccessStatement::AlterRole {
                name: "alice".into(),
                options: RoleOptions::default(),
                rename: Some("carol".into()),
            }
        );
        assert_eq!(
            access("DROP USER IF EXISTS a, b"),
            AccessStatement::DropRole {
                names: vec!["a".into(), "b".into()],
                if_exists: true,
            }
        );
        assert_eq!(
            access("SET ROLE alice"),
            AccessStatement::SetRole(Some("alice".into()))
        );
        assert_eq!(
            access("SET role = 'alice'"),
            AccessStatement::SetRole(Some("alice".into()))
        );
        assert_eq!(access("RESET ROLE"), AccessStatement::SetRole(None));
        assert_eq!(access("SET ROLE NONE"), AccessStatement::SetRole(None));
        assert_eq!(
            access("SET SESSION AUTHORIZATION DEFAULT"),
            AccessStatement::SetSessionAuthorization(None)
        );
        for bad in [
            "CREATE ROLE a CONNECTION LIMIT 3",
            "CREATE ROLE a IN ROLE b",
            "CREATE ROLE a PASSWORD 3",
            "CREATE ROLE a BOGUS",
        ] {
            assert!(crate::parse_sql(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants() {
        assert_eq!(
            access("GRANT SELECT, insert ON TABLE public.t, v TO alice, PUBLIC"),
            AccessStatement::Grant(Grant {
                grant: true,
                privileges: Some(vec!["SELECT".into(), "INSERT".into()]),
                on: GrantOn::Relations(vec!["t".into(), "v".into()]),
                grantees: vec![Grantee::Role("alice".into()), Grantee::Public],
            })
        );
        assert_eq!(
            access("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM bob CASCADE"),
            AccessStatement::Grant(Grant {
                grant: false,
                privileges: None,
                on: GrantOn::AllRelations,
                grantees: vec![Grantee::Role("bob".into())],
            })
        );
        assert_eq!(
            access("GRANT CREATE ON DATABASE eddy TO bob"),
            AccessStatement::Grant(Grant {
                grant: true,
                privileges: Some(vec!["CREATE".into()]),
                on: GrantOn::Database("eddy".into()),
                grantees: vec![Grantee::Role("bob".into())],
            })
        );
        let names = |sql: &str| match crate::parse_sql(sql).unwrap().remove(0) {
            EddyStatement::Sql(statement) => relations_named(&statement),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            names(
                "SELECT * FROM a JOIN public.b ON true WHERE x IN (SELECT y FROM \"C\") \
                   AND z IN (SELECT 1 FROM pg_catalog.pg_class, a)"
            ),
            vec!["a", "b", "C"]
        );
        assert_eq!(
            names("SELECT * FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND)"),
            vec!["bids", "date_time", "tumble"]
        );
        for bad in [
            "GRANT admin TO bob",
            "GRANT SELECT ON t TO bob WITH GRANT OPTION",
            "GRANT SELECT ON t",
        ] {
            assert!(crate::parse_sql(bad).is_err(), "{bad}");
        }
    }
}
