//! Leaf minting: real verification with rustls' WebPKI verifier, extensions, cache behaviour.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::tls::test_support::{roots, test_ca};

fn verify(
    minter: &LeafMinter,
    leaf: &CertifiedKey,
    as_name: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots(minter.ca()), crate::tls::provider())
            .build()
            .unwrap();
    verifier
        .verify_server_cert(
            &leaf.cert[0],
            &leaf.cert[1..],
            as_name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

#[test]
fn leaf_for_a_dns_name_verifies_against_the_ca() {
    let (ca, dir) = test_ca("leaf-dns");
    let minter = LeafMinter::new(ca);
    let name = dns("api.anthropic.com");
    let leaf = minter.leaf_for(&name).unwrap();
    verify(&minter, &leaf, &name).expect("leaf must verify for its own name");
    let other = dns("api.openai.com");
    let err = verify(&minter, &leaf, &other).unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn leaf_for_an_ip_verifies_against_the_ca() {
    let (ca, dir) = test_ca("leaf-ip");
    let minter = LeafMinter::new(ca);
    for ip in [
        IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
        IpAddr::V6(Ipv6Addr::new(
            0x2606, 0x2800, 0x220, 1, 0x248, 0x1893, 0x25c8, 0x1946,
        )),
    ] {
        let name = ServerName::IpAddress(ip.into());
        let leaf = minter.leaf_for(&name).unwrap();
        verify(&minter, &leaf, &name).expect("leaf must verify for its IP");
        let other = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)).into());
        assert!(verify(&minter, &leaf, &other).is_err());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn leaf_carries_the_extensions_strict_clients_require() {
    let (ca, dir) = test_ca("leaf-ext");
    let ca_not_after = ca.not_after();
    let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.certificate_der()).unwrap();
    let ca_ski = match ca_x509
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        }) {
        Some(ski) => ski,
        None => panic!("CA has no SKI"),
    };
    let ca_subject = ca_x509.subject().to_string();
    let minter = LeafMinter::new(ca);
    let leaf = minter.leaf_for(&dns("example.test")).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();

    assert_eq!(x509.issuer().to_string(), ca_subject);
    let mut aki = None;
    let mut ski = None;
    for ext in x509.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            _ => {}
        }
    }
    assert_eq!(
        aki.as_deref(),
        Some(ca_ski.as_slice()),
        "AKI must equal the CA's SKI"
    );
    assert!(ski.is_some_and(|s| s != ca_ski), "leaf needs its own SKI");

    let san = x509.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::DNSName("example.test")]
    );
    let eku = x509.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    let ku = x509.key_usage().unwrap().unwrap();
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign());
    let bc = x509.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);

    let now = time::OffsetDateTime::now_utc();
    let nb = x509.validity().not_before.to_datetime();
    let na = x509.validity().not_after.to_datetime();
    assert!(nb <= now - Duration::minutes(59) && nb >= now - Duration::minutes(61));
    assert!(na >= now + Duration::days(29) && na <= now + Duration::days(31));
    assert!(na <= ca_not_after);

    let serial = x509.raw_serial();
    assert_eq!(serial.len(), 16);
    let other = minter.leaf_for(&dns("other.test")).unwrap();
    let (_, other) = x509_parser::parse_x509_certificate(&other.cert[0]).unwrap();
    assert_ne!(other.raw_serial(), serial);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_ipv4_mapped_destination_gets_a_leaf_valid_for_both_spellings() {
    let (ca, dir) = test_ca("leaf-mapped");
    let minter = LeafMinter::new(ca);
    let v4 = Ipv4Addr::new(192, 0, 2, 10);
    let mapped = ServerName::IpAddress(IpAddr::V6(v4.to_ipv6_mapped()).into());
    let plain = ServerName::IpAddress(IpAddr::V4(v4).into());
    let leaf = minter.leaf_for(&mapped).unwrap();
    assert!(Arc::ptr_eq(&leaf, &minter.leaf_for(&plain).unwrap()));
    verify(&minter, &leaf, &plain).expect("valid for a.b.c.d");
    verify(&minter, &leaf, &mapped).expect("valid for ::ffff:a.b.c.d");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn leaves_are_cached_per_name_case_insensitively() {
    let (ca, dir) = test_ca("leaf-cache");
    let minter = LeafMinter::new(ca);
    let a = minter.leaf_for(&dns("Example.TEST")).unwrap();
    let b = minter.leaf_for(&dns("example.test")).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let c = minter.leaf_for(&ip).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(Arc::ptr_eq(&c, &minter.leaf_for(&ip).unwrap()));
    assert_eq!(minter.cached(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cache_is_bounded_and_evicts_the_least_recently_used() {
    let (ca, dir) = test_ca("leaf-evict");
    let minter = LeafMinter::with_capacity(ca, 4);
    let keep = minter.leaf_for(&dns("keep.test")).unwrap();
    for i in 0..20 {
        minter.leaf_for(&dns(&format!("h{i}.test"))).unwrap();
        // Touch `keep` so it is always recently used.
        assert!(Arc::ptr_eq(
            &keep,
            &minter.leaf_for(&dns("keep.test")).unwrap()
        ));
        assert!(minter.cached() <= 4, "cache grew to {}", minter.cached());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resolver_uses_sni_or_falls_back_to_the_destination_ip() {
    let (ca, dir) = test_ca("leaf-resolver");
    let minter = Arc::new(LeafMinter::new(ca));
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let resolver = SniResolver::new(minter, ip);
    assert_eq!(resolver.name_for(Some("api.example")), dns("api.example"));
    assert_eq!(resolver.name_for(None), ServerName::IpAddress(ip.into()));
    std::fs::remove_dir_all(dir).unwrap();
}
