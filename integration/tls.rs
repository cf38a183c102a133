//! TLS to AMI: amihub verifies the PBX certificate against `tls_ca`. The tests make their own CA
//! and server certificate, and put a TLS terminator in front of a simulated PBX.

#[path = "support/mod.rs"]
mod support;

use std::pin::Pin;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use support::*;
use tokio::net::{TcpListener, TcpStream};

struct Pki {
    ca: X509,
    cert: X509,
    key: PKey<Private>,
}

fn name(cn: &str) -> openssl::x509::X509Name {
    let mut b = X509NameBuilder::new().expect("name");
    b.append_entry_by_text("CN", cn).expect("cn");
    b.build()
}

fn cert(
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
        .expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
        .expect("na");
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

fn pki(ca_name: &str) -> Pki {
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

/// Accepts TLS on an ephemeral port and pipes each connection to `backend` in plain TCP.
async fn tls_terminator(p: &Pki, backend: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_private_key(&p.key).expect("key");
    b.set_certificate(&p.cert).expect("cert");
    let acceptor = b.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let ssl = Ssl::new(acceptor.context()).expect("ssl");
            tokio::spawn(async move {
                let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
                    return;
                };
                if Pin::new(&mut tls).accept().await.is_err() {
                    return;
                }
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn tls_server(addr: std::net::SocketAddr, ca_file: &std::path::Path) -> String {
    format!(
        "[[servers]]\nid = 1\nname = \"secure\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\nsecret = \"secret\"\ntls = true\ntls_ca = \"{}\"\n",
        addr.port(),
        ca_file.display()
    )
}

#[tokio::test]
async fn tls_with_the_right_ca_connects_and_marks_ssl() {
    let pbx = sim("secure").await;
    let p = pki("amihub test CA");
    let front = tls_terminator(&p, pbx.addr()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, p.ca.to_pem().expect("pem")).expect("write ca");
    let hub = Amihub::start(&tls_server(front, &ca_file));
    let mut c = hub.ws().await;
    c.wait_for("Connected over TLS", |v| is_status(v, 1, "Connected"))
        .await;
    pbx.emit(&[("Event", "OverTls")]);
    let v = c
        .wait_for("event over TLS", |v| is_event(v, 1, "OverTls"))
        .await;
    assert_eq!(v["ssl"], true);
}

#[tokio::test]
async fn tls_with_a_wrong_ca_is_refused() {
    let pbx = sim("secure").await;
    let p = pki("the real CA");
    let other = pki("some other CA");
    let front = tls_terminator(&p, pbx.addr()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, other.ca.to_pem().expect("pem")).expect("write ca");
    let hub = Amihub::start(&tls_server(front, &ca_file));
    let mut c = hub.ws().await;
    let v = c
        .wait_for("TLS refusal", |v| {
            is_status(v, 1, "Disconnected")
                && v["data"]["Reason"].as_str().unwrap_or("").contains("TLS")
        })
        .await;
    assert!(
        v["data"]["Reason"]
            .as_str()
            .unwrap_or("")
            .contains("certificate verify failed"),
        "{v}"
    );
    assert_eq!(
        pbx.stats().logins_ok,
        0,
        "no login over an unverified connection"
    );
}
