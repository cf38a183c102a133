//! HTTP Digest (RFC 7616, MD5, qop=auth) against an Apache `htdigest` file, as amiws had, so its
//! users migrate without new passwords. Nonces are stateless: a timestamp signed with a
//! per-process key, valid for [`NONCE_TTL_S`].

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use super::ct_eq;

/// How long a server nonce stays valid.
pub const NONCE_TTL_S: u64 = 300;

/// The users of one realm from an htdigest file (`user:realm:HA1`).
pub struct DigestUsers {
    realm: String,
    ha1: HashMap<String, String>,
    key: [u8; 16],
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
        }
    }

    fn nonce_at(&self, t: u64) -> String {
        let key: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        format!("{t:x}-{}", &md5_hex(&[&key, &t.to_string()])[..16])
    }

    /// The `WWW-Authenticate` value for a 401.
    pub fn challenge(&self) -> String {
        format!(
            "Digest realm=\"{}\", qop=\"auth\", algorithm=MD5, nonce=\"{}\"",
            self.realm,
            self.nonce_at(now_s())
        )
    }

    fn nonce_valid(&self, nonce: &str) -> bool {
        let Some(t) = nonce
            .split('-')
            .next()
            .and_then(|t| u64::from_str_radix(t, 16).ok())
        else {
            return false;
        };
        now_s().saturating_sub(t) <= NONCE_TTL_S
            && ct_eq(self.nonce_at(t).as_bytes(), nonce.as_bytes())
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
    pub fn verify(&self, method: &str, uri: &str, params: &str) -> Option<String> {
        let p = parse_params(params);
        if p.get("uri")? != uri {
            return None;
        }
        let user = p.get("username")?;
        let ha1 = self.ha1.get(user.as_str())?;
        if p.get("realm")? != &self.realm || !self.nonce_valid(p.get("nonce")?) {
            return None;
        }
        let ha2 = md5_hex(&[method, p.get("uri")?]);
        let expected = match p.get("qop").map(String::as_str) {
            Some("auth") => md5_hex(&[
                ha1,
                p.get("nonce")?,
                p.get("nc")?,
                p.get("cnonce")?,
                "auth",
                &ha2,
            ]),
            None => md5_hex(&[ha1, p.get("nonce")?, &ha2]),
            Some(_) => return None,
        };
        ct_eq(
            expected.as_bytes(),
            p.get("response")?.to_ascii_lowercase().as_bytes(),
        )
        .then(|| user.clone())
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
        let nonce = d.nonce_at(now_s());
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &answer(&d, "secret", &nonce))
                .as_deref(),
            Some("admin")
        );
        assert!(d.check_password("admin", "secret"));
    }

    #[test]
    fn wrong_password_stale_or_forged_nonce_are_refused() {
        let d = users();
        let nonce = d.nonce_at(now_s());
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &answer(&d, "wrong", &nonce)),
            None
        );
        let stale = d.nonce_at(now_s() - NONCE_TTL_S - 10);
        assert_eq!(
            d.verify("GET", "/api/v1/servers", &answer(&d, "secret", &stale)),
            None
        );
        assert_eq!(
            d.verify(
                "GET",
                "/api/v1/servers",
                &answer(&d, "secret", "5f00-0123456789abcdef")
            ),
            None
        );
        assert_eq!(
            d.verify("POST", "/api/v1/servers", &answer(&d, "secret", &nonce)),
            None
        );
        assert!(!d.check_password("other", "z"), "other realms are ignored");
    }
}
