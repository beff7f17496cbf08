//! Customer identity from a bearer JWT (API.md "Who may call what").
//!
//! Verification is `jsonwebtoken`'s; this file only decides which key and which algorithms a
//! token may use. The algorithm is pinned by the key, never taken from the token alone: an HS256
//! token is accepted only when `AUTH_JWT_SECRET` is configured, and checked only against it; an
//! RS256/ES256/EdDSA token only against a public key of that family from `AUTH_JWT_PUBLIC_KEYS`.
//! `alg: none` is not an algorithm here at all. `exp` and `sub` are required, with a small leeway.
//!
//! The key file (PEM blocks, or a JWKS document) is re-read when its modification time or size
//! changes, looked at no more than once a second: keys rotate without a restart. A file that
//! cannot be read or parsed keeps the keys read last (and says so in the log).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Secret;
use crate::domain::cart::CustomerId;

/// Seconds of clock difference tolerated on `exp`.
pub const LEEWAY_SECONDS: u64 = 30;
/// The shortest HS256 secret accepted at start.
pub const MIN_SECRET_BYTES: usize = 32;
/// How often the key file's metadata is looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Where customer keys come from (configuration).
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    /// `AUTH_JWT_SECRET`: HS256.
    pub secret: Option<Secret>,
    /// `AUTH_JWT_PUBLIC_KEYS`: a file of PEM public keys or a JWKS document.
    pub public_keys: Option<PathBuf>,
    /// `AUTH_JWT_ISSUER`, `AUTH_JWT_AUDIENCE`.
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl KeySettings {
    /// Whether any customer key is configured (`serve` refuses to start without one).
    pub fn any(&self) -> bool {
        self.secret.is_some() || self.public_keys.is_some()
    }
}

/// Why a bearer token was not accepted. Never shown to the caller beyond "unauthorized".
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no customer key is configured")]
    NoKeys,
    #[error("the token's algorithm is not accepted here")]
    Algorithm,
    #[error("the token has no usable key")]
    NoKey,
    #[error("the token is not valid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("the token's subject is not a customer id: {0}")]
    Subject(String),
    #[error("the public key file {path}: {why}")]
    KeyFile { path: String, why: String },
}

/// What a customer token carries that orderflow reads.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// A public key as read from the file.
struct PublicKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The key file as last read.
struct Loaded {
    stamp: Stamp,
    checked: Instant,
    keys: Vec<PublicKey>,
}

/// The keys customer tokens are verified with.
pub struct CustomerKeys {
    secret: Option<DecodingKey>,
    file: Option<PathBuf>,
    public: RwLock<Loaded>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for CustomerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerKeys")
            .field("secret", &self.secret.is_some())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl CustomerKeys {
    /// Reads the keys; the key file must be readable and hold at least one key now.
    pub fn load(settings: &KeySettings) -> Result<CustomerKeys, AuthError> {
        let secret = match &settings.secret {
            Some(s) => {
                Some(DecodingKey::from_secret(s.expose().as_bytes()).map_err(AuthError::Invalid)?)
            }
            None => None,
        };
        let mut loaded = Loaded {
            stamp: None,
            checked: Instant::now(),
            keys: Vec::new(),
        };
        if let Some(path) = &settings.public_keys {
            let (stamp, keys) = read_key_file(path)?;
            loaded = Loaded {
                stamp,
                checked: Instant::now(),
                keys,
            };
        }
        Ok(CustomerKeys {
            secret,
            file: settings.public_keys.clone(),
            public: RwLock::new(loaded),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// The customer a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<CustomerId, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::Invalid)?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.as_ref().ok_or(AuthError::Algorithm)?;
                self.decode(token, key, Algorithm::HS256)?
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) => {
                self.reload_if_changed();
                let public = match self.public.read() {
                    Ok(p) => p,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if self.file.is_none() {
                    return Err(AuthError::Algorithm);
                }
                let mut last = AuthError::NoKey;
                let candidates = public.keys.iter().filter(|k| {
                    k.algorithm == alg
                        && match (&header.kid, &k.kid) {
                            (Some(want), Some(have)) => want == have,
                            _ => true,
                        }
                });
                let mut found = None;
                for key in candidates {
                    match self.decode(token, &key.key, alg) {
                        Ok(claims) => {
                            found = Some(claims);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or(last)?
            }
            _ => return Err(AuthError::Algorithm),
        };
        CustomerId::parse(&claims.sub).map_err(AuthError::Subject)
    }

    fn decode(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(AuthError::Invalid)
    }

    /// Re-reads the key file when it changed (looked at once a second at most).
    fn reload_if_changed(&self) {
        let Some(path) = &self.file else { return };
        {
            let public = match self.public.read() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            if public.checked.elapsed() < RELOAD_CHECK {
                return;
            }
        }
        let mut public = match self.public.write() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if public.checked.elapsed() < RELOAD_CHECK {
            return; // another request looked meanwhile
        }
        public.checked = Instant::now();
        let stamp = stamp_of(path);
        if stamp.is_none() || stamp == public.stamp {
            return;
        }
        match read_key_file(path) {
            Ok((stamp, keys)) => {
                tracing::info!(path = %path.display(), keys = keys.len(), "customer public keys re-read");
                public.stamp = stamp;
                public.keys = keys;
            }
            Err(e) => {
                tracing::warn!(error = %e, "customer public keys not re-read; the keys read last stay");
            }
        }
    }
}

fn stamp_of(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// When a file was last changed, and its size: a change of either means re-read it.
type Stamp = Option<(SystemTime, u64)>;

/// The keys of a PEM or JWKS file, with its stamp.
fn read_key_file(path: &std::path::Path) -> Result<(Stamp, Vec<PublicKey>), AuthError> {
    let err = |why: String| AuthError::KeyFile {
        path: path.display().to_string(),
        why,
    };
    let stamp = stamp_of(path);
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let keys = parse_keys(&text).map_err(err)?;
    if keys.is_empty() {
        return Err(err("holds no public key".into()));
    }
    Ok((stamp, keys))
}

/// PEM public keys (RSA, EC P-256, Ed25519), or a JWKS document (`{"keys": [...]}`).
fn parse_keys(text: &str) -> Result<Vec<PublicKey>, String> {
    if text.trim_start().starts_with('{') {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
            let Some(algorithm) = algorithm_of(key.family()) else {
                return Err(format!("key {i}: not a public key"));
            };
            keys.push(PublicKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        return Ok(keys);
    }
    const BEGIN: &str = "-----BEGIN";
    let mut keys = Vec::new();
    let blocks = text
        .match_indices(BEGIN)
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    for (n, start) in blocks.iter().enumerate() {
        let end = blocks.get(n + 1).copied().unwrap_or(text.len());
        let block = text.get(*start..end).unwrap_or_default().as_bytes();
        let key = DecodingKey::from_rsa_pem(block)
            .or_else(|_| DecodingKey::from_ec_pem(block))
            .or_else(|_| DecodingKey::from_ed_pem(block))
            .map_err(|e| {
                format!(
                    "PEM block {}: not an RSA, EC or Ed25519 public key ({e})",
                    n + 1
                )
            })?;
        let Some(algorithm) = algorithm_of(key.family()) else {
            return Err(format!("PEM block {}: not a public key", n + 1));
        };
        keys.push(PublicKey {
            kid: None,
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// The one algorithm a key of this family verifies.
fn algorithm_of(family: AlgorithmFamily) -> Option<Algorithm> {
    match family {
        AlgorithmFamily::Rsa => Some(Algorithm::RS256),
        AlgorithmFamily::Ec => Some(Algorithm::ES256),
        AlgorithmFamily::Ed => Some(Algorithm::EdDSA),
        AlgorithmFamily::Hmac => None,
    }
}

/// An HS256 customer token (`orderflow token`, the load generator, demos, tests).
pub fn issue_token(
    secret: &Secret,
    customer: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, AuthError> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: customer.to_owned(),
        exp: now.saturating_add(ttl.as_secs()),
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
        iat: Some(now),
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes()).map_err(AuthError::Invalid)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(AuthError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

    fn keys(settings: KeySettings) -> CustomerKeys {
        CustomerKeys::load(&settings).unwrap()
    }

    fn hs(issuer: Option<&str>, audience: Option<&str>) -> KeySettings {
        KeySettings {
            secret: Some(Secret::new(SECRET)),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            ..KeySettings::default()
        }
    }

    fn token(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn a_signed_token_names_its_customer() {
        let t = issue_token(
            &Secret::new(SECRET),
            "ana",
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        assert_eq!(keys(hs(None, None)).verify(&t).unwrap().as_str(), "ana");
    }

    #[test]
    fn expired_unsigned_foreign_and_subjectless_tokens_are_refused() {
        let k = keys(hs(None, None));
        let old = jsonwebtoken::get_current_timestamp() - LEEWAY_SECONDS - 5;
        assert!(k
            .verify(&token(serde_json::json!({"sub": "a", "exp": old})))
            .is_err());
        assert!(
            k.verify(&token(serde_json::json!({"sub": "a"}))).is_err(),
            "exp is required"
        );
        assert!(k
            .verify(&token(serde_json::json!({"exp": in_an_hour()})))
            .is_err());
        assert!(k
            .verify(&token(
                serde_json::json!({"sub": "a b", "exp": in_an_hour()})
            ))
            .is_err());
        let other = issue_token(
            &Secret::new("another-secret-another-secret-another"),
            "a",
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        assert!(k.verify(&other).is_err());
        // alg: none, with the claims of a valid token.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, in_an_hour()))
        );
        assert!(k.verify(&none).is_err());
        assert!(k.verify("").is_err());
        assert!(k.verify("a.b.c").is_err());
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let k = keys(hs(Some("shop"), Some("orderflow")));
        let exp = in_an_hour();
        let good =
            token(serde_json::json!({"sub": "a", "exp": exp, "iss": "shop", "aud": "orderflow"}));
        assert!(k.verify(&good).is_ok());
        for bad in [
            serde_json::json!({"sub": "a", "exp": exp, "iss": "other", "aud": "orderflow"}),
            serde_json::json!({"sub": "a", "exp": exp, "iss": "shop", "aud": "other"}),
            serde_json::json!({"sub": "a", "exp": exp, "aud": "orderflow"}),
            serde_json::json!({"sub": "a", "exp": exp, "iss": "shop"}),
        ] {
            assert!(k.verify(&token(bad.clone())).is_err(), "{bad}");
        }
        // Not configured: an aud in the token is no reason to refuse it.
        let plain = keys(hs(None, None));
        assert!(plain.verify(&good).is_ok());
    }

    #[test]
    fn hs256_is_refused_when_only_public_keys_are_configured() {
        let dir = std::env::temp_dir().join(format!("of-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.pem");
        std::fs::write(&path, ED_PUBLIC).unwrap();
        let k = keys(KeySettings {
            public_keys: Some(path.clone()),
            ..KeySettings::default()
        });
        let t = issue_token(
            &Secret::new(SECRET),
            "a",
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        assert!(matches!(k.verify(&t), Err(AuthError::Algorithm)));
        // An HS256 token "signed" with the public key's text: the classic confusion.
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "exp": in_an_hour()}),
            &EncodingKey::from_secret(ED_PUBLIC.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(k.verify(&confused).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_key_file_is_an_error_at_start() {
        let e = CustomerKeys::load(&KeySettings {
            public_keys: Some("/nonexistent/keys.pem".into()),
            ..KeySettings::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/keys.pem"), "{e}");
        assert!(
            parse_keys("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n").is_err()
        );
        assert!(parse_keys("{\"keys\": 3}").is_err());
    }

    /// An Ed25519 public key (RFC 8410's example).
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
}
