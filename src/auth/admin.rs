//! The admin bearer tokens (`ADMIN_TOKEN`, `ADMIN_TOKENS`): support staff and operators. Several
//! may be valid at once, so a token is rotated without a gap: add the new one, move the clients,
//! remove the old one.

use super::Secret;

/// The shortest admin token accepted at start (API.md).
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The admin tokens in force (none: the admin endpoints are closed).
#[derive(Debug, Clone, Default)]
pub struct AdminTokens(Vec<Secret>);

impl AdminTokens {
    /// Tokens from `ADMIN_TOKEN` and the comma-separated `ADMIN_TOKENS`; each at least
    /// [`MIN_ADMIN_TOKEN_LEN`] characters. The error never contains a token.
    pub fn parse(single: Option<&str>, list: Option<&str>) -> Result<AdminTokens, String> {
        let mut tokens = Vec::new();
        let given = single.into_iter().map(|t| ("ADMIN_TOKEN", t)).chain(
            list.into_iter()
                .flat_map(|l| l.split(',').map(|t| ("ADMIN_TOKENS", t))),
        );
        for (name, raw) in given {
            let token = raw.trim();
            if token.is_empty() {
                continue;
            }
            if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
                return Err(format!(
                    "{name}: every admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters (one has {}); make one with `openssl rand -hex 32`",
                    token.chars().count()
                ));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "{name}: an admin token must not contain spaces or control characters"
                ));
            }
            tokens.push(Secret::new(token));
        }
        Ok(AdminTokens(tokens))
    }

    /// Tokens given as they are (tests and tools).
    pub fn from_tokens<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> AdminTokens {
        AdminTokens(tokens.into_iter().map(|t| Secret::new(t)).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first token (what the operator's tools send).
    pub fn first(&self) -> Option<&Secret> {
        self.0.first()
    }

    /// Whether `given` is one of the tokens. Every token is compared, each in time that depends
    /// only on the lengths, with no early exit on a length difference.
    pub fn accepts(&self, given: &str) -> bool {
        self.0.iter().fold(false, |found, token| {
            found | constant_time_eq(token.expose().as_bytes(), given.as_bytes())
        })
    }
}

/// Equal bytes, in time independent of where they differ: every byte of the longer input is
/// read, and a length difference is folded into the result instead of returning early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn short_tokens_are_refused_without_showing_them() {
        let e = AdminTokens::parse(Some("change-me"), None).unwrap_err();
        assert!(e.contains("ADMIN_TOKEN") && e.contains("32"), "{e}");
        assert!(!e.contains("change-me"), "{e}");
        let e = AdminTokens::parse(None, Some(&format!("{A},short"))).unwrap_err();
        assert!(e.contains("ADMIN_TOKENS"), "{e}");
    }

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let tokens = AdminTokens::parse(Some(A), Some(&format!(" {B} ,"))).unwrap();
        assert!(tokens.accepts(A));
        assert!(tokens.accepts(B));
        assert!(!tokens.accepts(&A[..31]));
        assert!(!tokens.accepts(&format!("{A}0")));
        assert!(!tokens.accepts(""));
        assert!(!AdminTokens::default().accepts(""));
        assert!(AdminTokens::parse(None, None).unwrap().is_empty());
    }

    #[test]
    fn equality_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"\0"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = AdminTokens::parse(Some(A), None).unwrap();
        assert!(!format!("{tokens:?}").contains(A));
    }
}
