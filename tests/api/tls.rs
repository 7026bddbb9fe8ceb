//! The clouds.yaml TLS settings against the real Keystone behind an in-process TLS
//! terminator with a self-signed certificate (the bed itself speaks plain HTTP):
//! `cacert` trusts it, no `cacert` refuses it (naming the cloud and the cause),
//! and `verify: false` accepts it; `cert` and `key` satisfy an endpoint that demands
//! a client certificate.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::helpers::*;

/// A TLS listener on 127.0.0.1 that forwards the plain stream to `target`; with
/// `client_ca`, it demands a client certificate issued by that CA.
async fn start_tls_forwarder(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<CertificateDer<'static>>,
    target: std::net::SocketAddr,
) -> (u16, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(vec![cert], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: fine.
                let Ok(mut tls) = acceptor.accept(inbound).await else {
                    return;
                };
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                }
            });
        }
    });
    (port, handle)
}

#[tokio::test]
async fn cacert_trusts_a_private_ca_and_verify_false_skips_the_check() {
    let bed = Bed::get();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = generated.cert.pem();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let (port, forwarder) = start_tls_forwarder(cert, key, None, keystone_addr()).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, cert_pem).unwrap();
    let https = format!("https://127.0.0.1:{port}/v3");
    let mut trusted = bed.cloud_entry("charm");
    trusted["auth"]["auth_url"] = https.clone().into();
    trusted["cacert"] = ca_file.display().to_string().into();
    let mut untrusted = bed.cloud_entry("charm");
    untrusted["auth"]["auth_url"] = https.clone().into();
    let mut unverified = bed.cloud_entry("charm");
    unverified["auth"]["auth_url"] = https.into();
    unverified["verify"] = false.into();
    let d = spawn_daemon(
        &clouds_document(&[
            ("trusted", trusted),
            ("untrusted", untrusted),
            ("unverified", unverified),
        ]),
        |_| {},
    )
    .await;

    d.wait_authenticated("trusted", Duration::from_secs(30))
        .await;
    d.wait_authenticated("unverified", Duration::from_secs(30))
        .await;
    assert_eq!(d.latest("tls-probe", Some("trusted")).await.status, 200);

    let refused = d.wait_for_error("untrusted", Duration::from_secs(20)).await;
    assert_eq!(refused["authenticated"], false);
    let error = refused["last_error"].as_str().unwrap();
    assert!(
        error.contains("untrusted") && error.to_lowercase().contains("certificate"),
        "{error}"
    );
    let a = d.latest("tls-probe", Some("untrusted")).await;
    a.expect(503, "not_ready");
    forwarder.abort();
}

fn keystone_addr() -> std::net::SocketAddr {
    Bed::get()
        .keystone_url
        .trim_start_matches("http://")
        .trim_end_matches("/v3")
        .parse()
        .unwrap()
}

/// `cert` and `key`: a Keystone behind a TLS endpoint that demands a client
/// certificate accepts the cloud that has one, and refuses the one that has none.
#[tokio::test]
async fn cert_and_key_authenticate_the_client_to_a_mutual_tls_endpoint() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let bed = Bed::get();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["charm-client".to_string()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();

    let (port, forwarder) = start_tls_forwarder(
        server.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        Some(ca.der().clone()),
        keystone_addr(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("client.pem", client.pem());
    let key_file = write("client-key.pem", client_key.serialize_pem());
    let https = format!("https://127.0.0.1:{port}/v3");
    let mut with_cert = bed.cloud_entry("charm");
    with_cert["auth"]["auth_url"] = https.clone().into();
    with_cert["cacert"] = ca_file.clone().into();
    with_cert["cert"] = cert_file.into();
    with_cert["key"] = key_file.into();
    let mut without_cert = bed.cloud_entry("charm");
    without_cert["auth"]["auth_url"] = https.into();
    without_cert["cacert"] = ca_file.into();
    let d = spawn_daemon(
        &clouds_document(&[("with-cert", with_cert), ("without-cert", without_cert)]),
        |_| {},
    )
    .await;
    d.wait_authenticated("with-cert", Duration::from_secs(30))
        .await;
    let s = d
        .wait_for_error("without-cert", Duration::from_secs(20))
        .await;
    assert_eq!(s["authenticated"], false);
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("without-cert") && error.contains("CertificateRequired"),
        "{error}"
    );
    forwarder.abort();
}
