//! Command lines as they may be recorded (`session_open.command`, `process_exec.argv`):
//! credentials in them become keyed fingerprints (SPEC.md §7), wherever they sit in an
//! argument — a shell tool's whole script arrives as one `sh -c` argument, so a secret is
//! looked for inside arguments, not only as one.
//!
//! What is taken for a secret:
//! - the value of `NAME=VALUE` (also `--name=value`) whose name says key, token, secret,
//!   password/passwd or credential (any case);
//! - the argument after a flag so named (`--api-key VALUE`);
//! - the value of a secret header (`Authorization: …`, `x-api-key: …`, SPEC §7);
//! - anything in a well-known credential format: `sk-…` (OpenAI, `sk-ant-…` Anthropic),
//!   `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_…` and `github_pat_…` (GitHub), `xox?-…` (Slack),
//!   `AKIA…`/`ASIA…` (AWS access key ids), `AIza…` (Google API keys), `glpat-…` (GitLab).
use crate::ledger::Ledger;
use regex::{Captures, Regex};
use std::sync::LazyLock;

/// A name that says it holds a secret.
const SECRET_NAME: &str = r"(?:key|token|secret|passw(?:or)?d|credential)";

static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"(?i)(?P<name>(?:--?)?(?:[A-Za-z_][A-Za-z0-9_.-]*)?{SECRET_NAME}[A-Za-z0-9_.-]*)=(?P<value>"[^"]*"|'[^']*'|[^\s'"&;|]+)"#
    ))
    .expect("the assignment pattern is valid")
});

static FLAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)^--?[A-Za-z0-9_.-]*{SECRET_NAME}[A-Za-z0-9_.-]*$"
    ))
    .expect("the flag pattern is valid")
});

static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?P<name>proxy-authorization|authorization|x-api-key|x-goog-api-key|api-key|set-cookie|cookie)\s*:\s*(?P<value>[^'"\r\n]+)"#,
    )
    .expect("the header pattern is valid")
});

static FORMAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|[^A-Za-z0-9_-])(?P<value>sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})",
    )
    .expect("the credential format pattern is valid")
});

/// `argv` as it may be recorded.
pub fn redact_all(ledger: &Ledger, argv: &[String]) -> Vec<String> {
    redact_with(|secret| ledger.fingerprint(secret), argv)
}

/// [`redact_all`] with the fingerprint function given (pure, for tests).
pub fn redact_with(fingerprint: impl Fn(&[u8]) -> String, argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut value_is_secret = false;
    for arg in argv {
        if value_is_secret {
            out.push(fingerprint(arg.as_bytes()));
            value_is_secret = false;
            continue;
        }
        value_is_secret = FLAG.is_match(arg);
        out.push(redact_one(&fingerprint, arg));
    }
    out
}

/// One argument with every secret in it replaced by its fingerprint.
fn redact_one(fingerprint: &impl Fn(&[u8]) -> String, arg: &str) -> String {
    let arg = HEADER.replace_all(arg, |c: &Captures| {
        let value = c["value"].trim_end();
        let tail = &c["value"][value.len()..];
        format!("{}: {}{tail}", &c["name"], fingerprint(value.as_bytes()))
    });
    let arg = ASSIGNMENT.replace_all(&arg, |c: &Captures| {
        let value = &c["value"];
        if value.starts_with("hmac-sha256:") {
            return c[0].to_owned();
        }
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        format!("{}={}", &c["name"], fingerprint(unquoted.as_bytes()))
    });
    let arg = FORMAT.replace_all(&arg, |c: &Captures| {
        let whole = &c[0];
        let value = &c["value"];
        format!(
            "{}{}",
            &whole[..whole.len() - value.len()],
            fingerprint(value.as_bytes())
        )
    });
    arg.into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact_with;

    fn fp(secret: &[u8]) -> String {
        format!("hmac-sha256:<{}>", String::from_utf8_lossy(secret))
    }

    fn redact(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        redact_with(fp, &args)
    }

    #[test]
    fn assignments_whose_name_says_secret_are_fingerprinted() {
        assert_eq!(
            redact(&["env", "ANTHROPIC_API_KEY=abc123", "HOME=/root", "claude"]),
            [
                "env",
                "ANTHROPIC_API_KEY=hmac-sha256:<abc123>",
                "HOME=/root",
                "claude"
            ]
        );
        assert_eq!(
            redact(&["--api-key=xyz", "--db-password='p w'", "GITHUB_TOKEN=\"t\""]),
            [
                "--api-key=hmac-sha256:<xyz>",
                "--db-password=hmac-sha256:<p w>",
                "GITHUB_TOKEN=hmac-sha256:<t>"
            ]
        );
    }

    #[test]
    fn a_secret_inside_a_shell_script_is_found() {
        let out = redact(&[
            "bash",
            "-c",
            "export OPENAI_API_KEY=k1; curl -H 'Authorization: Bearer tok en' https://x/?key=q&b=1 && echo sk-ant-api03-AAAAAAAAAAAAAAAAAAAA",
        ]);
        assert_eq!(
            out[2],
            "export OPENAI_API_KEY=hmac-sha256:<k1>; curl -H 'Authorization: hmac-sha256:<Bearer tok en>' https://x/?key=hmac-sha256:<q>&b=1 && echo hmac-sha256:<sk-ant-api03-AAAAAAAAAAAAAAAAAAAA>"
        );
    }

    #[test]
    fn the_value_after_a_secret_flag_is_fingerprinted() {
        assert_eq!(
            redact(&["tool", "--token", "abc", "--verbose", "x"]),
            ["tool", "--token", "hmac-sha256:<abc>", "--verbose", "x"]
        );
    }

    #[test]
    fn credential_formats_are_fingerprinted_wherever_they_are() {
        let cases = [
            "sk-proj-abcdefghijklmnopqrstuvwxyz",
            "ghp_abcdefghijklmnopqrstuvwxyz0123",
            "github_pat_11ABCDEFGHIJKLMNOPQRSTUV",
            "xoxb-1234567890-abcdefghij",
            "AKIAIOSFODNN7EXAMPLE",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
            "glpat-abcdefghijklmnopqrstu",
        ];
        for secret in cases {
            let out = redact(&[&format!("x:{secret}")]);
            assert_eq!(out[0], format!("x:hmac-sha256:<{secret}>"), "{secret}");
        }
        // Not credentials: ordinary words and paths stay.
        assert_eq!(
            redact(&["ls", "-la", "/home/sk-user", "risk-assessment-document"]),
            ["ls", "-la", "/home/sk-user", "risk-assessment-document"]
        );
    }
}
