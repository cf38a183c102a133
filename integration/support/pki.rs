//! Test certificates: a throwaway CA and a server certificate for 127.0.0.1 signed by it.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509NameBuilder, X509};

/// A CA and a server certificate (with its key) for 127.0.0.1.
pub struct Pki {
    pub ca: X509,
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Pki {
    /// Writes `cert.pem`, `key.pem` and `ca.pem` into `dir`; returns their paths.
    pub fn write(
        &self,
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let (cert, key, ca) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("ca.pem"),
        );
        std::fs::write(&cert, self.cert.to_pem().expect("cert pem")).expect("write cert");
        std::fs::write(&key, self.key.private_key_to_pem_pkcs8().expect("key pem"))
            .expect("write key");
        std::fs::write(&ca, self.ca.to_pem().expect("ca pem")).expect("write ca");
        (cert, key, ca)
    }
}

fn name(cn: &str) -> X509Name {
    let mut b = X509NameBuilder::new().expect("name");
    b.append_entry_by_text("CN", cn).expect("cn");
    b.build()
}

/// A certificate for `subject`: a CA when `ca`, else a server certificate with an IP SAN of
/// 127.0.0.1; signed by `issuer`, or self-signed.
pub fn cert(
    subject: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
) -> X509 {
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("version");
    let mut serial = BigNum::new().expect("bn");
    serial.rand(64, MsbOption::MAYBE_ZERO, false).expect("rand");
    b.set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("serial");
    b.set_subject_name(&name(subject)).expect("subject");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
        .expect("not after");
    b.set_pubkey(key).expect("pubkey");
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
    } else {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))
            .expect("san");
        b.append_extension(san).expect("ext");
    }
    match issuer {
        Some((ca_cert, ca_key)) => {
            b.set_issuer_name(ca_cert.subject_name()).expect("issuer");
            b.sign(ca_key, MessageDigest::sha256()).expect("sign");
        }
        None => {
            b.set_issuer_name(&name(subject)).expect("issuer");
            b.sign(key, MessageDigest::sha256()).expect("sign");
        }
    }
    b.build()
}

/// A fresh CA named `ca_name` and a server certificate for 127.0.0.1 signed by it.
pub fn pki(ca_name: &str) -> Pki {
    let ca_key = PKey::ec_gen("prime256v1").expect("ca key");
    let ca = cert(ca_name, &ca_key, None, true);
    let key = PKey::ec_gen("prime256v1").expect("key");
    let server = cert("127.0.0.1", &key, Some((&ca, &ca_key)), false);
    Pki {
        ca,
        cert: server,
        key,
    }
}
