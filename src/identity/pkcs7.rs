//! PKCS#7 / CMS signed-data (RFC 5652) over a document: Azure's attested document and AWS's
//! `pkcs7` and `rsa2048` instance-identity signatures.
//!
//! Contract: [`sign`] returns the DER of a `ContentInfo` of type signedData that encapsulates
//! the content (as `id-data`), is signed with RSA PKCS#1 v1.5 and SHA-256 by the signing key,
//! identifies the signer by issuer and serial number and carries the signer's leaf certificate,
//! so `openssl cms -verify -CAfile <(imds-tun ca)` (or `openssl smime -verify`) checks it with
//! nothing else. Signed attributes are the two RFC 5652 requires (content-type,
//! message-digest) and no signing time, which keeps the output a function of its inputs.

use x509_cert::der::asn1::OctetString;
use x509_cert::der::oid::db::{rfc5911, rfc5912};
use x509_cert::der::{Any, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;

use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};

use super::keys::{IdentityKeys, KeyError, Leaf};

fn failed(e: impl std::fmt::Display) -> KeyError {
    KeyError::Signing(e.to_string())
}

/// CMS signed-data over `content`, signed as the `leaf` certificate; DER.
pub fn sign(keys: &IdentityKeys, leaf: Leaf, content: &[u8]) -> Result<Vec<u8>, KeyError> {
    let cert = keys.leaf(leaf);
    let econtent = Any::encode_from(&OctetString::new(content).map_err(failed)?).map_err(failed)?;
    let encapsulated = EncapsulatedContentInfo {
        econtent_type: rfc5911::ID_DATA,
        econtent: Some(econtent),
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    });
    let signer_info =
        SignerInfoBuilder::new(keys.signer(), sid, sha256.clone(), &encapsulated, None)
            .map_err(failed)?;
    let mut builder = SignedDataBuilder::new(&encapsulated);
    builder
        .add_digest_algorithm(sha256)
        .map_err(failed)?
        .add_certificate(CertificateChoices::Certificate(cert.clone()))
        .map_err(failed)?
        .add_signer_info::<_, rsa::pkcs1v15::Signature>(signer_info)
        .map_err(failed)?;
    builder.build().map_err(failed)?.to_der().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    use sha2::{Digest, Sha256};
    use x509_cert::der::{Decode, Encode};
    use x509_cert::spki::DecodePublicKey;

    #[test]
    fn signed_data_parses_back_and_its_signature_verifies() {
        let keys = IdentityKeys::fixed();
        let content = br#"{"nonce":"1234567890"}"#;
        let der = sign(&keys, Leaf::Azure, content).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sign(&keys, Leaf::Azure, content).ok(), Some(der.clone()));

        let info = ContentInfo::from_der(&der).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.content_type, rfc5911::ID_SIGNED_DATA);
        let signed: SignedData = info.content.decode_as().unwrap_or_else(|e| panic!("{e}"));
        let econtent = signed
            .encap_content_info
            .econtent
            .as_ref()
            .unwrap_or_else(|| panic!("content is encapsulated"));
        assert_eq!(econtent.value(), content);
        let certs = signed.certificates.as_ref().map(|c| c.0.len());
        assert_eq!(certs, Some(1));

        // The signer info's signature covers the DER of its signed attributes, which hold
        // the content's SHA-256.
        let si = signed
            .signer_infos
            .0
            .get(0)
            .unwrap_or_else(|| panic!("a signer"));
        let attrs = si.signed_attrs.as_ref().unwrap_or_else(|| panic!("attrs"));
        let digest = Sha256::digest(content);
        let has_digest = attrs.iter().any(|a| {
            a.oid == rfc5911::ID_MESSAGE_DIGEST
                && a.values.iter().any(|v| v.value() == digest.as_slice())
        });
        assert!(has_digest, "message-digest attribute");
        let spki_der = keys
            .leaf(Leaf::Azure)
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default();
        let public =
            rsa::RsaPublicKey::from_public_key_der(&spki_der).unwrap_or_else(|e| panic!("{e}"));
        let signature =
            Signature::try_from(si.signature.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let attrs_der = attrs.to_der().unwrap_or_default();
        VerifyingKey::<Sha256>::new(public)
            .verify(&attrs_der, &signature)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
