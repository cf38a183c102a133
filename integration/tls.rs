//! TLS to AMI: amihub verifies the PBX certificate against `tls_ca`. The tests make their own CA
//! and server certificate, and put a TLS terminator in front of a simulated PBX.

#[path = "support/mod.rs"]
mod support;

use std::pin::Pin;

use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use support::pki::{pki, Pki};
use support::*;
use tokio::net::{TcpListener, TcpStream};

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
