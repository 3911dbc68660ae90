//! The brokers' cryptography, on RustCrypto's `aes-gcm`:
//!
//! - OProxy's wire format: `BASE64(nonce(12) || AES-GCM(key, nonce, plaintext) || tag(16))`,
//!   no associated data, with an AES-128, -192 or -256 key (as Python's `AESGCM` takes
//!   them) — [`open_wire`] and [`seal_wire`];
//! - sealing at rest (registration keys, provider refresh tokens) under one AES-256 key
//!   derived from a named secret — [`SealKey`];
//! - HMAC-SHA256 for keyed hashes and key derivation ([`derive_key`], [`keyed_hash`]).

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The nonce size of AES-GCM as OProxy uses it.
pub const NONCE_BYTES: usize = 12;
/// The authentication tag appended to the ciphertext.
pub const TAG_BYTES: usize = 16;
/// The longest `encrypted_token` (base64) accepted: a refresh token is a few KiB at most.
pub const MAX_WIRE_CHARS: usize = 16 * 1024;

/// Why a sealed value could not be opened. Deliberately coarse: which check failed is not
/// told to a caller (a padding or tag oracle helps nobody honest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not base64")]
    NotBase64,
    #[error("shorter than a nonce and a tag")]
    TooShort,
    #[error("too long")]
    TooLong,
    #[error("the key is not 16, 24 or 32 bytes")]
    BadKey,
    #[error("authentication failed (wrong key, or the data was changed)")]
    Inauthentic,
    #[error("no random numbers")]
    NoRandom,
}

enum Cipher {
    Aes128(Box<AesGcm<Aes128, U12>>),
    Aes192(Box<AesGcm<Aes192, U12>>),
    Aes256(Box<AesGcm<Aes256, U12>>),
}

impl Cipher {
    fn new(key: &[u8]) -> Result<Cipher, SealError> {
        Ok(match key.len() {
            16 => Cipher::Aes128(Box::new(
                AesGcm::new_from_slice(key).map_err(|_| SealError::BadKey)?,
            )),
            24 => Cipher::Aes192(Box::new(
                AesGcm::new_from_slice(key).map_err(|_| SealError::BadKey)?,
            )),
            32 => Cipher::Aes256(Box::new(
                AesGcm::new_from_slice(key).map_err(|_| SealError::BadKey)?,
            )),
            _ => return Err(SealError::BadKey),
        })
    }

    fn decrypt(&self, nonce: &[u8; NONCE_BYTES], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = (*nonce).into();
        match self {
            Cipher::Aes128(c) => c.decrypt(&nonce, sealed),
            Cipher::Aes192(c) => c.decrypt(&nonce, sealed),
            Cipher::Aes256(c) => c.decrypt(&nonce, sealed),
        }
        .map_err(|_| SealError::Inauthentic)
    }

    fn encrypt(&self, nonce: &[u8; NONCE_BYTES], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = (*nonce).into();
        match self {
            Cipher::Aes128(c) => c.encrypt(&nonce, plain),
            Cipher::Aes192(c) => c.encrypt(&nonce, plain),
            Cipher::Aes256(c) => c.encrypt(&nonce, plain),
        }
        .map_err(|_| SealError::TooLong)
    }
}

/// A decrypted wire value: the nonce it came with (for replay markers) and the plaintext.
#[derive(Debug)]
pub struct Opened {
    pub nonce: [u8; NONCE_BYTES],
    pub plaintext: Vec<u8>,
}

/// Opens `BASE64(nonce || ciphertext || tag)` with `key` (16, 24 or 32 bytes).
///
/// # Errors
/// Not base64, too short or long, a bad key length, or authentication failed.
pub fn open_wire(key: &[u8], encoded: &str) -> Result<Opened, SealError> {
    if encoded.len() > MAX_WIRE_CHARS {
        return Err(SealError::TooLong);
    }
    let cipher = Cipher::new(key)?;
    let raw = STANDARD
        .decode(encoded.trim())
        .map_err(|_| SealError::NotBase64)?;
    if raw.len() < NONCE_BYTES + TAG_BYTES {
        return Err(SealError::TooShort);
    }
    let (nonce, sealed) = raw.split_at(NONCE_BYTES);
    let mut nonce_bytes = [0u8; NONCE_BYTES];
    nonce_bytes.copy_from_slice(nonce);
    let plaintext = cipher.decrypt(&nonce_bytes, sealed)?;
    Ok(Opened {
        nonce: nonce_bytes,
        plaintext,
    })
}

/// Seals `plaintext` in the wire format with `key` and the given nonce (never reuse a
/// nonce with a key: [`random_nonce`]).
///
/// # Errors
/// A bad key length.
pub fn seal_wire(
    key: &[u8],
    nonce: &[u8; NONCE_BYTES],
    plaintext: &[u8],
) -> Result<String, SealError> {
    let sealed = Cipher::new(key)?.encrypt(nonce, plaintext)?;
    let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Ok(STANDARD.encode(out))
}

/// A fresh random nonce.
///
/// # Errors
/// The system has no random numbers to give.
pub fn random_nonce() -> Result<[u8; NONCE_BYTES], SealError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|_| SealError::NoRandom)?;
    Ok(nonce)
}

/// `n` random bytes (keys, ids, state values).
///
/// # Errors
/// The system has no random numbers to give.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SealError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| SealError::NoRandom)?;
    Ok(bytes)
}

/// HMAC-SHA256 of `text` under `key`.
#[must_use]
pub fn keyed_hash(key: &[u8], text: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(text);
    mac.finalize().into_bytes().into()
}

/// A 256-bit key for one purpose, derived from a master secret (HMAC-SHA256 with the
/// purpose as message), so one named secret serves several keys that never meet.
#[must_use]
pub fn derive_key(master: &[u8], purpose: &str) -> [u8; 32] {
    keyed_hash(master, purpose.as_bytes())
}

/// Seals values at rest with AES-256-GCM under a key derived from a named secret. The
/// value's purpose is bound in as associated data, so a sealed key cannot be swapped in
/// for a sealed refresh token.
#[derive(Clone)]
pub struct SealKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

impl SealKey {
    #[must_use]
    pub fn new(key: [u8; 32]) -> SealKey {
        SealKey { key }
    }

    /// `BASE64(nonce || AES-256-GCM(value, aad = purpose))`.
    ///
    /// # Errors
    /// No random numbers for the nonce.
    pub fn seal(&self, purpose: &str, value: &[u8]) -> Result<String, SealError> {
        let cipher: AesGcm<Aes256, U12> =
            AesGcm::new_from_slice(&self.key).map_err(|_| SealError::BadKey)?;
        let nonce = random_nonce()?;
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                aes_gcm::aead::Payload {
                    msg: value,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| SealError::TooLong)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`SealKey::seal`] made for the same purpose.
    ///
    /// # Errors
    /// Not ours, changed, or sealed for another purpose.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let cipher: AesGcm<Aes256, U12> =
            AesGcm::new_from_slice(&self.key).map_err(|_| SealError::BadKey)?;
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::NotBase64)?;
        if raw.len() < NONCE_BYTES + TAG_BYTES {
            return Err(SealError::TooShort);
        }
        let (nonce, body) = raw.split_at(NONCE_BYTES);
        let mut nonce_bytes = [0u8; NONCE_BYTES];
        nonce_bytes.copy_from_slice(nonce);
        cipher
            .decrypt(
                &nonce_bytes.into(),
                aes_gcm::aead::Payload {
                    msg: body,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| SealError::Inauthentic)
    }
}

#[cfg(test)]
mod tests;
