//! `gleitzeit-submit acl`: prints one `ACL SETUSER` line per role that gives the role's user
//! exactly the Redis commands and keys it uses ([`gleitzeit_queue::acl`]), ready to pipe into
//! `redis-cli`. Opens no connection.
//!
//! A password is never printed: from `--password-env VAR` the line carries its SHA-256
//! (`#<hex>`, which Redis accepts in place of the password); without it the line sets the
//! placeholder `>CHANGE_ME` and a note on stderr says so.

use std::io::Write;

use gleitzeit_queue::acl::Role;
use gleitzeit_queue::Keys;
use sha2::{Digest, Sha256};

use crate::cli::{AclArgs, RoleArg};
use crate::error::CliError;
use crate::exit::ExitCode;

/// The password rule of the lines when no `--password-env` is given.
pub const PLACEHOLDER: &str = ">CHANGE_ME";

/// The roles `--role` selects.
pub fn roles(arg: RoleArg) -> Vec<Role> {
    match arg {
        RoleArg::Submitter => vec![Role::Submitter],
        RoleArg::Worker => vec![Role::Worker],
        RoleArg::Service => vec![Role::Service],
        RoleArg::Monitor => vec![Role::Monitor],
        RoleArg::Operator => vec![Role::Operator],
        RoleArg::All => Role::ALL.to_vec(),
    }
}

/// One user of the `--json` document of `acl`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AclUserView {
    /// The role (`submitter`, `worker`, `service`, `monitor`, `operator`).
    pub role: String,
    /// The ACL user name, `<namespace>-<role>`.
    pub user: String,
    /// The `ACL SETUSER` line.
    pub line: String,
}

/// One `ACL SETUSER` line: `reset` first, so running it again leaves exactly these rules.
pub fn line(role: Role, keys: &Keys, namespace: &str, password_rule: &str) -> String {
    let mut words = vec![
        "ACL".to_owned(),
        "SETUSER".to_owned(),
        role.user(namespace),
        "reset".to_owned(),
        "on".to_owned(),
        password_rule.to_owned(),
    ];
    words.extend(role.rules(keys));
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// A word as `redis-cli` reads it back: bare when it holds no blank, quote, backslash or
/// control character, else in double quotes with `\"`, `\\` and `\xHH` escapes.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'));
    if plain {
        return word.to_owned();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c.is_whitespace() && c != ' ' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The password rule from the environment variable `var`: `#<sha256 hex>`.
fn hashed_password(var: &str) -> Result<String, CliError> {
    let password = std::env::var(var).map_err(|_| {
        CliError::Usage(format!(
            "--password-env {var}: the environment variable {var} is not set (or not UTF-8)"
        ))
    })?;
    if password.is_empty() {
        return Err(CliError::Usage(format!(
            "--password-env {var}: the environment variable {var} is empty"
        )));
    }
    Ok(format!(
        "#{}",
        hex::encode(Sha256::digest(password.as_bytes()))
    ))
}

/// Runs `acl`: the lines on `out`, notes on `err`.
pub(crate) fn print(
    namespace: &str,
    json: bool,
    args: &AclArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let keys = Keys::new(namespace).map_err(|e| CliError::Usage(e.to_string()))?;
    let password = match &args.password_env {
        Some(var) => hashed_password(var)?,
        None => {
            writeln!(
                err,
                "note: these lines set the placeholder password CHANGE_ME; replace `{PLACEHOLDER}` with `>YOUR-PASSWORD`, or run again with --password-env VAR"
            )?;
            PLACEHOLDER.to_owned()
        }
    };
    let users: Vec<AclUserView> = roles(args.role)
        .into_iter()
        .map(|role| AclUserView {
            role: role.as_str().to_owned(),
            user: role.user(namespace),
            line: line(role, &keys, namespace, &password),
        })
        .collect();
    if json {
        crate::session::print_json(out, &users)?;
    } else {
        for u in &users {
            writeln!(out, "{}", u.line)?;
        }
    }
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reset_then_grant_exactly_the_role() {
        let keys = Keys::new("gleitzeit").unwrap();
        let l = line(Role::Submitter, &keys, "gleitzeit", PLACEHOLDER);
        assert!(
            l.starts_with("ACL SETUSER gleitzeit-submitter reset on >CHANGE_ME ~{gleitzeit}:wf:* "),
            "{l}"
        );
        assert!(l.contains(" resetchannels -@all +evalsha "), "{l}");
        assert!(l.contains(" +script|load "), "{l}");
        assert!(
            !l.contains(":ep:"),
            "a submitter needs no endpoint keys: {l}"
        );
        let m = line(Role::Monitor, &keys, "gleitzeit", PLACEHOLDER);
        assert!(
            m.contains(" %R~{gleitzeit}:dead ") && m.contains(" +time"),
            "{m}"
        );
        assert!(!m.contains("+evalsha"), "{m}");
    }

    #[test]
    fn docs_show_the_lines_of_the_default_namespace() {
        let doc = include_str!("../../../docs/acl.md");
        let keys = Keys::new("gleitzeit").unwrap();
        for role in Role::ALL {
            let l = line(role, &keys, "gleitzeit", PLACEHOLDER);
            assert!(
                doc.lines().any(|d| d == l),
                "docs/acl.md lacks the current line of role {role}:\n{l}"
            );
            for usage in role.usage() {
                let cmd = usage.command.to_uppercase().replace('|', " ");
                assert!(
                    doc.contains(&format!("| `{cmd}` |")),
                    "docs/acl.md does not list {cmd} of role {role}"
                );
            }
        }
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote("~{a}:*"), "~{a}:*");
        assert_eq!(quote(r#">p "q" \"#), r#"">p \"q\" \\""#);
        assert_eq!(quote(">a\tb"), r#"">a\x09b""#);
        assert_eq!(quote(""), r#""""#);
    }

    #[test]
    fn password_from_the_environment_is_hashed_never_printed() {
        // The variable name is unique to this test, so no other test races on it.
        std::env::set_var("GLEITZEIT_ACL_TEST_PW", "s3cret");
        let rule = hashed_password("GLEITZEIT_ACL_TEST_PW").unwrap();
        assert_eq!(
            rule,
            "#1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        );
        assert!(matches!(
            hashed_password("GLEITZEIT_ACL_TEST_UNSET"),
            Err(CliError::Usage(m)) if m.contains("GLEITZEIT_ACL_TEST_UNSET")
        ));
    }
}
