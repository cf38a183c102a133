//! HTTP Digest (RFC 7616, MD5, qop=auth) against an Apache `htdigest` file, as amiws had, so its
//! users migrate without new passwords. Nonces are a timestamp and a random part signed with a
//! per-process key, valid for [`NONCE_TTL_S`]; the nonce counts each nonce was used with are
//! remembered, so a captured answer cannot be replayed. SHA-256, MD5-sess, `auth-int` and the
//! RFC 2069 form without qop are refused: an htdigest file holds MD5 HA1 only.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use super::ct_eq;

/// How long a server nonce stays valid.
pub const NONCE_TTL_S: u64 = 300;
/// Nonces whose used counts are remembered at most (only answers that verified are recorded).
const MAX_TRACKED_NONCES: usize = 8192;
/// Answers one nonce may carry; then the client is told the nonce is stale and takes a new one.
const MAX_USES_PER_NONCE: usize = 1024;

/// Why a Digest answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid credentials")]
    Invalid,
    #[error("Digest {0} is not supported: only algorithm=MD5 with qop=auth")]
    Unsupported(String),
    #[error("Digest nonce count already used (replayed answer)")]
    Replayed,
    #[error("Digest nonce is stale")]
    Stale,
}

/// The users of one realm from an htdigest file (`user:realm:HA1`).
pub struct DigestUsers {
    realm: String,
    ha1: HashMap<String, String>,
    key: [u8; 16],
    /// nonce → (issue time, nonce counts already used).
    used: Mutex<HashMap<String, (u64, HashSet<String>)>>,
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// HA1 = MD5(user:realm:password), what an htdigest file stores.
pub fn ha1(user: &str, realm: &str, password: &str) -> String {
    md5_hex(&[user, realm, password])
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DigestUsers {
    /// Reads the file; lines of other realms are ignored.
    pub fn load(path: &Path, realm: &str) -> Result<DigestUsers, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("http.auth_file: cannot read {}: {e}", path.display()))?;
        Ok(Self::parse(&text, realm))
    }

    pub fn parse(text: &str, realm: &str) -> DigestUsers {
        let ha1 = text
            .lines()
            .filter_map(|l| {
                let mut it = l.trim().splitn(3, ':');
                let (user, r, hash) = (it.next()?, it.next()?, it.next()?);
                (r == realm && hash.len() == 32)
                    .then(|| (user.to_string(), hash.to_ascii_lowercase()))
            })
            .collect();
        DigestUsers {
            realm: realm.to_string(),
            ha1,
            key: rand::random(),
            used: Mutex::new(HashMap::new()),
        }
    }

    fn nonce_at(&self, t: u64, salt: u64) -> String {
        let key: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        let mac = md5_hex(&[&key, &t.to_string(), &salt.to_string()]);
        format!("{t:x}-{salt:016x}-{}", &mac[..16])
    }

    /// The `WWW-Authenticate` value for a 401 (`stale=true` when the client's nonce wore out).
    pub fn challenge(&self, stale: bool) -> String {
        format!(
            "Digest realm=\"{}\", qop=\"auth\", algorithm=MD5, nonce=\"{}\"{}",
            self.realm,
            self.nonce_at(now_s(), rand::random()),
            if stale { ", stale=true" } else { "" }
        )
    }

    /// The issue time of a nonce this process signed, if it is one.
    fn nonce_time(&self, nonce: &str) -> Option<u64> {
        let mut it = nonce.split('-');
        let t = u64::from_str_radix(it.next()?, 16).ok()?;
        let salt = u64::from_str_radix(it.next()?, 16).ok()?;
        ct_eq(self.nonce_at(t, salt).as_bytes(), nonce.as_bytes()).then_some(t)
    }

    /// Records one use of (nonce, nc); refuses a count already used.
    fn record_use(&self, nonce: &str, issued: u64, nc: &str) -> Result<(), DigestError> {
        let mut used = self.used.lock().map_err(|_| DigestError::Invalid)?;
        if used.len() >= MAX_TRACKED_NONCES && !used.contains_key(nonce) {
            let now = now_s();
            used.retain(|_, (t, _)| now.saturating_sub(*t) <= NONCE_TTL_S);
            if used.len() >= MAX_TRACKED_NONCES {
                return Err(DigestError::Stale);
            }
        }
        let (_, counts) = used
            .entry(nonce.to_string())
            .or_insert_with(|| (issued, HashSet::new()));
        if counts.len() >= MAX_USES_PER_NONCE {
            return Err(DigestError::Stale);
        }
        if !counts.insert(nc.to_ascii_lowercase()) {
            return Err(DigestError::Replayed);
        }
        Ok(())
    }

    /// Checks a password against the stored HA1 (HTTP Basic for htdigest users).
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        self.ha1.get(user).is_some_and(|h| {
            ct_eq(
                h.as_bytes(),
                md5_hex(&[user, &self.realm, password]).as_bytes(),
            )
        })
    }

    /// The users of this realm with their HA1, sorted.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .ha1
            .iter()
            .map(|(u, h)| (u.clone(), h.clone()))
            .collect();
        v.sort();
        v
    }

    /// Verifies the parameters of an `Authorization: Digest …` header for a request to `uri`;
    /// returns the user name.
    pub fn verify(&self, method: &str, uri: &str, params: &str) -> Result<String, DigestError> {
        use DigestError::Invalid;
        let p = parse_params(params);
        let get = |k: &str| p.get(k).map(String::as_str).ok_or(Invalid);
        match p.get("algorithm").map(String::as_str) {
            None => {}
            Some(a) if a.eq_ignore_ascii_case("MD5") => {}
            Some(a) => return Err(DigestError::Unsupported(format!("algorithm={a}"))),
        }
        match p.get("qop").map(String::as_str) {
            Some("auth") => {}
            Some(q) => return Err(DigestError::Unsupported(format!("qop={q}"))),
            None => return Err(DigestError::Unsupported("without qop (RFC 2069)".into())),
        }
        if get("uri")? != uri {
            return Err(Invalid);
        }
        let user = get("username")?;
        let ha1 = self.ha1.get(user).ok_or(Invalid)?;
        let nonce = get("nonce")?;
        let issued = self.nonce_time(nonce).ok_or(Invalid)?;
        if get("realm")? != self.realm {
            return Err(Invalid);
        }
        if now_s().saturating_sub(issued) > NONCE_TTL_S {
            return Err(DigestError::Stale);
        }
        let nc = get("nc")?;
        let ha2 = md5_hex(&[method, uri]);
        let expected = md5_hex(&[ha1, nonce, nc, get("cnonce")?, "auth", &ha2]);
        if !ct_eq(
            expected.as_bytes(),
            get("response")?.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(Invalid);
        }
        self.record_use(nonce, issued, nc)?;
        Ok(user.to_string())
    }
}

/// `a="b", c=d` → map (quotes removed).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, t)) => (v.to_string(), t),
                None => (q.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, t)) => (v.trim().to_string(), t),
                None => (after.trim().to_string(), ""),
            }
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> DigestUsers {
        // htdigest -c file amiws admin  (password "secret")
        let line = format!(
            "admin:amiws:{}\nother:elsewhere:{}\n",
            md5_hex(&["admin", "amiws", "secret"]),
            md5_hex(&["x", "y", "z"])
        );
        DigestUsers::parse(&line, "amiws")
    }

    fn answer(d: &DigestUsers, password: &str, nonce: &str) -> String {
        let ha1 = md5_hex(&["admin", "amiws", password]);
        let ha2 = md5_hex(&["GET", "/api/v1/servers"]);
        let resp = md5_hex(&[&ha1, nonce, "00000001", "abc", "auth", &ha2]);
        let _ = d;
        format!("username=\"admin\", realm=\"amiws\", nonce=\"{nonce}\", uri=\"/api/v1/servers\", qop=auth, nc=00000001, cnonce=\"abc\", response=\"{resp}\"")
    }

    #[test]
    fn a_correct_digest_response_is_accepted() {
        let d = users();
        let nonce = d.nonce_at(now_s(), 7);
        let ok = answer(&d, "secret", &nonce);
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &ok).as_deref(),
            Ok("admin")
        );
        assert!(d.check_password("admin", "secret"));
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &ok),
            Err(DigestError::Replayed)
        );
        for (from, to) in [
            ("qop=auth, ", ""),
            ("qop=auth,", "qop=auth-int,"),
            ("realm=", "algorithm=SHA-256, realm="),
            ("realm=", "algorithm=MD5-sess, realm="),
        ] {
            let changed = ok.replace(from, to);
            assert!(
                matches!(
                    d.verify("GET", "/api/v1/servers", &changed),
                    Err(DigestError::Unsupported(_))
                ),
                "{changed}"
            );
        }
    }

    #[test]
    fn wrong_password_stale_or_forged_nonce_are_refused() {
        let d = users();
        let nonce = d.nonce_at(now_s(), 1);
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &answer(&d, "wrong", &nonce)),
            Err(DigestError::Invalid)
        );
        let stale = d.nonce_at(now_s() - NONCE_TTL_S - 10, 1);
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &answer(&d, "secret", &stale)),
            Err(DigestError::Stale)
        );
        assert_eq!(
            d.verify(
                "GET",
                "/api/v1/servers",
                &answer(&d, "secret", "5f00-01-0123456789abcdef")
            ),
            Err(DigestError::Invalid)
        );
        assert_eq!(
            d.verify("POST", "/api/v1/servers", &answer(&d, "secret", &nonce)),
            Err(DigestError::Invalid)
        );
        assert!(!d.check_password("other", "z"), "other realms are ignored");
    }
}
