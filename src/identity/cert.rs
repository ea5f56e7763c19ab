//! X.509 certificates (RFC 5280): the self-signed CA and the leaves it issues for the signing
//! key.
//!
//! Contract: [`ca`] builds a root certificate (basicConstraints CA, keyCertSign/cRLSign) for
//! a key; [`leaf`] builds an end-entity certificate (digitalSignature/nonRepudiation, no EKU,
//! so OpenSSL accepts it for S/MIME signing) for the signing key, valid exactly as long as the
//! CA. Both are deterministic for given inputs (PKCS#1 v1.5 signatures have no randomness), so
//! fixed keys give byte-identical certificates and golden files stay stable.

use std::str::FromStr;
use std::time::SystemTime;

use rsa::pkcs1v15::SigningKey;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::Ia5String;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// The CA's subject.
pub const CA_SUBJECT: &str = "CN=imds-tun local CA,O=imds-tun";

/// Which leaf certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    /// The attested-document signer: `CN=metadata.azure.com`, SAN `*.metadata.azure.com`
    /// (spec/azure.md).
    Azure,
    /// The instance-identity signer, with the subject of AWS's published certificates.
    Aws,
}

impl Leaf {
    fn subject(self) -> &'static str {
        match self {
            Leaf::Azure => "CN=metadata.azure.com",
            Leaf::Aws => "O=Amazon Web Services LLC,L=Seattle,ST=Washington State,C=US",
        }
    }

    fn dns_names(self) -> &'static [&'static str] {
        match self {
            Leaf::Azure => &["*.metadata.azure.com"],
            Leaf::Aws => &[],
        }
    }
}

/// Why a certificate could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build a certificate: {0}")]
pub struct CertError(String);

fn err(e: impl std::fmt::Display) -> CertError {
    CertError(e.to_string())
}

/// A self-signed CA certificate for `key`, valid from `not_before` to `not_after`.
pub fn ca(
    key: &RsaPrivateKey,
    serial: &[u8],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Certificate, CertError> {
    let signer = SigningKey::<Sha256>::new(key.clone());
    let validity = Validity {
        not_before: Time::try_from(not_before).map_err(err)?,
        not_after: Time::try_from(not_after).map_err(err)?,
    };
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).map_err(err)?;
    let builder = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::new(serial).map_err(err)?,
        validity,
        Name::from_str(CA_SUBJECT).map_err(err)?,
        spki,
        &signer,
    )
    .map_err(err)?;
    builder.build::<rsa::pkcs1v15::Signature>().map_err(err)
}

/// The `which` leaf certificate for `subject_key`, issued by `ca_cert` (whose key is
/// `ca_key`), with the CA's validity.
pub fn leaf(
    ca_key: &RsaPrivateKey,
    ca_cert: &Certificate,
    subject_key: &RsaPublicKey,
    serial: &[u8],
    which: Leaf,
) -> Result<Certificate, CertError> {
    let signer = SigningKey::<Sha256>::new(ca_key.clone());
    let profile = Profile::Leaf {
        issuer: ca_cert.tbs_certificate.subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let spki = SubjectPublicKeyInfoOwned::from_key(subject_key.clone()).map_err(err)?;
    let mut builder = CertificateBuilder::new(
        profile,
        SerialNumber::new(serial).map_err(err)?,
        ca_cert.tbs_certificate.validity,
        Name::from_str(which.subject()).map_err(err)?,
        spki,
        &signer,
    )
    .map_err(err)?;
    if !which.dns_names().is_empty() {
        let names = which
            .dns_names()
            .iter()
            .map(|n| Ia5String::new(n).map(GeneralName::DnsName))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        builder.add_extension(&SubjectAltName(names)).map_err(err)?;
    }
    builder.build::<rsa::pkcs1v15::Signature>().map_err(err)
}

/// A positive serial number of 16 bytes from arbitrary bytes (RFC 5280 4.1.2.2: positive, at
/// most 20 octets).
pub fn serial_from(bytes: &[u8]) -> [u8; 16] {
    let mut serial = [0u8; 16];
    for (out, b) in serial.iter_mut().zip(bytes) {
        *out = *b;
    }
    // Positive and without a redundant leading zero octet in DER.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}
