//! `error: {"sqlstate": "40001", "message": "could not serialize access", "fatal": false}` —
//! answer with a real protocol error instead of the server's answer. The rule needs
//! `match.protocol` (the error is written in that protocol): `"postgres"` or `"redis"`.
//!
//! - `sqlstate`: five characters of `[0-9A-Z]`; its first two (the class) become the `code`
//!   label of the errors metric. Required for PostgreSQL, refused for Redis.
//! - `message` (required): 1 to 512 printable characters (no line breaks or other controls).
//!   For Redis the whole error line (`READONLY You can't write against a read only
//!   replica.`): its first word is the error's code.
//! - `errno` (MySQL, required there; refused elsewhere): the error number, 1 to 65535;
//!   `sqlstate` defaults to `HY000` for MySQL.
//! - `fatal` (default false): severity `FATAL`, and the connection is closed after it.
//! - `rollback` (MySQL only): whether the error rolls back the whole transaction, as 1213 does
//!   (`true`), or only the statement (`false`). The default is what the server does for that
//!   errno ([`crate::protocol::mysql::rolls_back`]).
//!
//! On a statement rule (`match.commands` / `match.queryContains`) a matching statement does not
//! execute and the client receives the error in its place, the session staying in step (see
//! [`crate::protocol::postgres::session`]). Without those keys the rule is about connections:
//! a new session is refused at startup with a FATAL of that code (whatever `fatal` says), and
//! with `applyTo: all` an open session receives it as FATAL at its next statement.
//!
//! The byte-level behaviour below never acts: the protocol layer does the work.

use super::connection::Ledger;
use super::{Behaviour, Ending, Kind, Outcome, Start, TickAction};
use crate::config::fields::Fields;
use crate::config::{quote, ConfigError};
use crate::flow::Direction;
use crate::protocol::ErrorReply;

pub const MAX_MESSAGE: usize = 512;

/// Replaced in `message` by each statement's command (see `engine::name_command`).
const PLACEHOLDER: &[u8] = b"{command}";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub reply: ErrorReply,
    /// `message` holds `{command}`: replaced, for each statement, by its command as the
    /// server names it.
    pub names_command: bool,
}

impl Kind for Error {
    const KEY: &'static str = "error";
    const PARAMS: &'static [&'static str] = &["sqlstate", "errno", "message", "fatal", "rollback"];
    type State = State;

    fn parse(params: &Fields<'_>) -> Result<Error, ConfigError> {
        let code = match params.str("sqlstate")? {
            None => None,
            Some(code) => match <[u8; 5]>::try_from(code.as_bytes()) {
                Ok(c)
                    if c.iter()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) =>
                {
                    Some(c)
                }
                _ => {
                    return Err(ConfigError::new(
                        params.path("sqlstate"),
                        format!(
                        "{} is not a SQLSTATE (five characters of 0-9 and A-Z, as in \"40001\")",
                        quote(code)
                    ),
                    ))
                }
            },
        };
        let errno = match params.get("errno") {
            None => None,
            Some(_) => match params.f64("errno")? {
                Some(n) if n.fract() == 0.0 && (1.0..=65535.0).contains(&n) => Some(n as u16),
                _ => {
                    return Err(ConfigError::new(
                        params.path("errno"),
                        "not an error number (an integer from 1 to 65535, as in 1213)",
                    ))
                }
            },
        };
        let Some(message) = params.str("message")? else {
            return Err(ConfigError::new(params.path("message"), "missing"));
        };
        let chars = message.chars().count();
        if chars == 0 || chars > MAX_MESSAGE {
            return Err(ConfigError::new(
                params.path("message"),
                format!("{chars} characters (1 to {MAX_MESSAGE} are allowed)"),
            ));
        }
        if message.chars().any(char::is_control) {
            return Err(ConfigError::new(
                params.path("message"),
                "has a line break or another control character (one printable line is allowed)",
            ));
        }
        Ok(Error {
            names_command: message
                .as_bytes()
                .windows(PLACEHOLDER.len())
                .any(|w| w == PLACEHOLDER),
            reply: ErrorReply {
                code,
                errno,
                message: message.into(),
                fatal: params.bool("fatal")?.unwrap_or(false),
                rollback: params.bool("rollback")?,
            },
        })
    }

    fn start(&self, _at: Start) -> State {
        State
    }
}

/// A kind the protocol layer carries out (`error`, `miss`): at connection level it touches
/// nothing.
#[derive(Debug)]
pub struct State;

impl Behaviour for State {
    fn on_data(
        &mut self,
        ledger: &mut Ledger,
        dir: Direction,
        size: usize,
        _now: &mut dyn FnMut() -> u64,
    ) -> Outcome {
        ledger.forward(dir, size)
    }

    fn on_tick(&mut self, _ledger: &mut Ledger, _now: u64) -> Option<TickAction> {
        None
    }

    fn next_wake(&self) -> Option<u64> {
        None
    }

    fn end(&self, _ledger: &Ledger) -> Ending {
        Ending::Clean
    }
}

#[cfg(test)]
mod tests {
    use crate::fault::FaultKind;
    use crate::plugin::Config;

    const MATCH: &str = r#""match": {"hosts": ["pg"], "protocol": "postgres"}"#;

    fn parse_kind(kind: &str) -> FaultKind {
        let json = format!(r#"{{"faults": [{{"name": "r", {MATCH}, {kind}}}]}}"#);
        Config::parse(json.as_bytes())
            .unwrap()
            .faults
            .remove(0)
            .kind
    }

    fn parse_error(kind: &str) -> String {
        let json = format!(r#"{{"faults": [{{"name": "r", {MATCH}, {kind}}}]}}"#);
        Config::parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parameters() {
        let k = parse_kind(
            r#""error": {"sqlstate": "40001", "message": "could not serialize access"}"#,
        );
        let FaultKind::Error(e) = k else {
            panic!("{k:?}")
        };
        assert_eq!(e.reply.code, Some(*b"40001"));
        assert!(!e.reply.fatal);
        for (kind, want) in [
            (
                r#""error": {"message": "x"}"#,
                "faults[0].error.sqlstate: missing",
            ),
            (
                r#""error": {"sqlstate": "4000", "message": "x"}"#,
                r#"faults[0].error.sqlstate: "4000" is not a SQLSTATE"#,
            ),
            (
                r#""error": {"sqlstate": "40p01", "message": "x"}"#,
                r#""40p01" is not a SQLSTATE"#,
            ),
            (
                r#""error": {"sqlstate": "40001"}"#,
                "faults[0].error.message: missing",
            ),
            (
                r#""error": {"sqlstate": "40001", "message": ""}"#,
                "faults[0].error.message: 0 characters",
            ),
            (
                r#""error": {"sqlstate": "40001", "message": "a\nb"}"#,
                "faults[0].error.message: has a line break",
            ),
            (
                r#""error": {"sqlstate": "40001", "message": "x", "fatal": "yes"}"#,
                "faults[0].error.fatal: invalid type",
            ),
            (
                r#""error": {"sqlstate": "40001", "message": "x", "severity": "PANIC"}"#,
                "faults[0].error.severity: unknown field",
            ),
        ] {
            let got = parse_error(kind);
            assert!(got.contains(want), "{kind}\n  got:  {got}\n  want: {want}");
        }
        let long = "m".repeat(513);
        assert!(parse_error(&format!(
            r#""error": {{"sqlstate": "40001", "message": "{long}"}}"#
        ))
        .contains("513 characters"));
    }
}
