//! Client-side encryption of chunks with age (§14): a backup needs only the
//! recipients' public keys (`age1…`); reading a snapshot back needs an
//! identity file (`AGE-SECRET-KEY-1…`), which stays off the backup host.
//!
//! Each chunk is one complete age file (binary, X25519 recipients), so that
//! `age -d -i key.txt` decrypts any chunk on its own.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use age::x25519;
use zeroize::Zeroize;

use crate::archive::manifest::{AGE, Encryption, Manifest};
use crate::error::usage;

/// What an identity file may weigh: a few keys and comments, not a snapshot.
const IDENTITY_FILE_LIMIT: u64 = 64 << 10;

/// Validated age X25519 recipients: whom backups are encrypted to.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Parses one recipient, saying what is wrong without ever echoing a secret
/// key given by mistake.
pub fn parse_recipient(text: &str) -> Result<x25519::Recipient, String> {
    if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY") {
        return Err("an age secret key was given where a recipient (public key) belongs: pass the key's public half (`age-keygen -y KEY_FILE` prints it), and keep the secret key off the backup host".into());
    }
    if text.starts_with("ssh-") {
        return Err(format!(
            "{text:?} is an SSH key: only age X25519 recipients (age1…, from age-keygen) are supported"
        ));
    }
    x25519::Recipient::from_str(text).map_err(|why| {
        format!("{text:?} is not an age X25519 recipient ({why}); age-keygen prints one as \"Public key: age1…\"")
    })
}

impl Recipients {
    /// Recipients from flag, environment or file values, each holding one or
    /// more keys separated by commas or whitespace; `None` when there are none.
    pub fn parse(values: &[String]) -> anyhow::Result<Option<Recipients>> {
        let mut keys: Vec<x25519::Recipient> = Vec::new();
        for text in values
            .iter()
            .flat_map(|v| v.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|t| !t.is_empty())
        {
            let key = parse_recipient(text).map_err(|why| usage(format!("--encrypt-to: {why}")))?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok((!keys.is_empty()).then_some(Recipients { keys }))
    }

    /// The public keys as age prints them (`age1…`).
    pub fn names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_string()).collect()
    }

    /// What the manifest records.
    pub fn encryption(&self) -> Encryption {
        Encryption {
            scheme: AGE.into(),
            recipients: self.names(),
        }
    }

    /// Starts one age file (a fresh file key) on `out`; the caller writes
    /// the plaintext and must call `finish`.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("cannot encrypt a chunk: {e}")))?;
        encryptor.wrap_output(out)
    }
}

/// The age identities of an identity file: secret keys that never print.
pub struct Identities {
    keys: Vec<x25519::Identity>,
    publics: Vec<String>,
    path: PathBuf,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("public_keys", &self.publics)
            .finish()
    }
}

impl Identities {
    /// Reads an identity file in age's format (`AGE-SECRET-KEY-1…` lines,
    /// `#` comments, blank lines). Errors name the file and the line, never
    /// its content. A file every user may read is refused, as ssh does.
    pub fn load(path: &Path) -> anyhow::Result<Identities> {
        let shown = path.display();
        let file = std::fs::File::open(path)
            .map_err(|e| usage(format!("cannot read the identity file {shown}: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| usage(format!("cannot read the identity file {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(usage(format!(
                "the identity file {shown} is not a regular file"
            )));
        }
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            return Err(usage(format!(
                "the identity file {shown} is readable by every user (mode {:04o}); it holds secret keys: `chmod 600 {shown}` (and consider it exposed)",
                mode & 0o7777
            )));
        }
        let mut bytes = Vec::new();
        file.take(IDENTITY_FILE_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| usage(format!("cannot read the identity file {shown}: {e}")))?;
        let parsed = if bytes.len() as u64 > IDENTITY_FILE_LIMIT {
            Err(format!(
                "is larger than {} KiB: it is not an age identity file",
                IDENTITY_FILE_LIMIT >> 10
            ))
        } else {
            Identities::parse(&bytes)
        };
        bytes.zeroize();
        parsed
            .map(|(keys, publics)| Identities {
                keys,
                publics,
                path: path.to_path_buf(),
            })
            .map_err(|why| usage(format!("the identity file {shown} {why}")))
    }

    /// Parses identity file bytes; the error completes "the identity file X …".
    fn parse(bytes: &[u8]) -> Result<(Vec<x25519::Identity>, Vec<String>), String> {
        if bytes.starts_with(b"age-encryption.org/")
            || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        {
            return Err("is itself encrypted (with a passphrase?): decrypt it to a private file first (`age -d -o key.txt FILE`)".into());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "is not text".to_string())?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("AGE-PLUGIN-") {
                return Err(format!(
                    "holds a plugin identity on line {}: only native age identities (AGE-SECRET-KEY-1…) are supported",
                    n + 1
                ));
            }
            let key = x25519::Identity::from_str(line).map_err(|_| {
                format!(
                    "holds something other than an age identity on line {} (expected AGE-SECRET-KEY-1…, as age-keygen writes)",
                    n + 1
                )
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(
                "holds no identity (expected AGE-SECRET-KEY-1… lines, as age-keygen writes)".into(),
            );
        }
        let publics = keys.iter().map(|k| k.to_public().to_string()).collect();
        Ok((keys, publics))
    }

    /// The public keys of the identities (`age1…`), safe to print.
    pub fn public_keys(&self) -> &[String] {
        &self.publics
    }

    /// Decrypts one age file.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, age::DecryptError> {
        let decryptor = age::Decryptor::new_buffered(sealed)?;
        let mut reader = decryptor.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))?;
        // The plaintext is shorter than the ciphertext: no size from the input.
        let mut plain = Vec::with_capacity(sealed.len());
        reader.read_to_end(&mut plain)?;
        Ok(plain)
    }
}

/// The identity that opens `manifest`'s chunks: `None` for a plain
/// snapshot. A missing identity, or one that is none of the snapshot's
/// recipients, is a usage error naming the recipients, raised before any
/// chunk is read.
pub fn key_for(
    manifest: &Manifest,
    identity: Option<&Arc<Identities>>,
) -> anyhow::Result<Option<Arc<Identities>>> {
    let Some(encryption) = &manifest.encryption else {
        return Ok(None);
    };
    let recipients = encryption.recipients.join(", ");
    let Some(identity) = identity else {
        return Err(usage(format!(
            "snapshot {} is encrypted (age) to {recipients}: pass --identity FILE (or RABBITMQ_BACKUP_IDENTITY_FILE) naming an identity file that holds one of their secret keys; nothing was changed",
            manifest.id
        )));
    };
    let matches = identity
        .public_keys()
        .iter()
        .any(|p| encryption.recipients.iter().any(|r| r == p));
    if !matches {
        return Err(usage(format!(
            "snapshot {} is encrypted (age) to {recipients}, but the identity file {} holds the key(s) of {}: pass the identity of one of the snapshot's recipients; nothing was changed",
            manifest.id,
            identity.path.display(),
            identity.public_keys().join(", ")
        )));
    }
    Ok(Some(identity.clone()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::{Kind, kind_of};
    use proptest::prelude::*;
    use std::io::Write;

    /// A fresh identity file (mode 0600) and its recipient.
    pub(crate) fn keypair(dir: &Path, name: &str) -> (PathBuf, String, String) {
        let identity = x25519::Identity::generate();
        let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
        let public = identity.to_public().to_string();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("# created: today\n# public key: {public}\n{secret}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, public, secret)
    }

    fn seal_all(recipients: &Recipients, plain: &[u8]) -> Vec<u8> {
        let mut w = recipients.seal(Vec::new()).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn sealed_data_opens_with_the_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public, _) = keypair(dir.path(), "key.txt");
        let (other_path, other_public, _) = keypair(dir.path(), "other.txt");
        let recipients = Recipients::parse(std::slice::from_ref(&public))
            .unwrap()
            .unwrap();
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = seal_all(&recipients, &plain);
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        let identity = Identities::load(&path).unwrap();
        assert_eq!(identity.public_keys(), [public]);
        assert_eq!(identity.open(&sealed).unwrap(), plain);
        let other = Identities::load(&other_path).unwrap();
        assert_eq!(other.public_keys(), [other_public]);
        assert!(matches!(
            other.open(&sealed),
            Err(age::DecryptError::NoMatchingKeys)
        ));
    }

    #[test]
    fn recipients_split_on_commas_and_whitespace_and_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a, _) = keypair(dir.path(), "a");
        let (_, b, _) = keypair(dir.path(), "b");
        let r = Recipients::parse(&[format!("{a}, {b}\n{a}"), b.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(r.names(), [a, b]);
        assert!(Recipients::parse(&[" , ".into()]).unwrap().is_none());
        assert!(Recipients::parse(&[]).unwrap().is_none());
    }

    #[test]
    fn bad_recipients_are_named_and_secrets_are_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, secret) = keypair(dir.path(), "k");
        let err = Recipients::parse(&["age1notakey".into()]).unwrap_err();
        assert_eq!(kind_of(&err), Kind::Usage);
        assert!(err.to_string().contains("age1notakey"), "{err}");
        for given in [secret.clone(), secret.to_lowercase()] {
            let err = Recipients::parse(std::slice::from_ref(&given)).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage);
            assert!(!err.to_string().contains(&given[15..]), "{err}");
            assert!(err.to_string().contains("age-keygen -y"), "{err}");
        }
        let err = Recipients::parse(&["ssh-ed25519 AAAAC3Nza".into()]).unwrap_err();
        assert!(err.to_string().contains("ssh-ed25519"), "{err}");
    }

    #[test]
    fn identity_files_are_checked_without_revealing_them() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, secret) = keypair(dir.path(), "key.txt");
        let loaded = Identities::load(&path).unwrap();
        assert!(!format!("{loaded:?}").contains(&secret));

        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        // Another last character (the checksum's): 'X' when it is not one already.
        let last = if secret.ends_with('X') { 'Y' } else { 'X' };
        let damaged = format!("# comment\n\n{}{last}\n", &secret[..secret.len() - 1]);
        let cases = [
            (write("open", &format!("{secret}\n"), 0o644), "chmod 600"),
            (write("damaged", &damaged, 0o600), "line 3"),
            (write("empty", "# nothing\n", 0o600), "holds no identity"),
            (
                write(
                    "armored",
                    "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n",
                    0o600,
                ),
                "itself encrypted",
            ),
            (
                write("plugin", "AGE-PLUGIN-YUBIKEY-1XYZ\n", 0o600),
                "plugin",
            ),
            (dir.path().join("missing"), "cannot read"),
            (dir.path().to_path_buf(), "not a regular file"),
        ];
        for (path, expected) in cases {
            let err = Identities::load(&path).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage, "{}", path.display());
            let text = err.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains(&secret[15..40]), "{text}");
        }
        // Windows line ends and indentation are tolerated.
        let crlf = write("crlf", &format!("# k\r\n  {secret}\r\n"), 0o600);
        Identities::load(&crlf).unwrap();
        let big = write("big", &"#".repeat(100 << 10), 0o600);
        assert!(
            Identities::load(&big)
                .unwrap_err()
                .to_string()
                .contains("larger")
        );
    }

    #[test]
    fn key_for_names_the_recipients_when_the_identity_is_missing_or_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public, _) = keypair(dir.path(), "key.txt");
        let (other_path, other_public, _) = keypair(dir.path(), "other.txt");
        let mut manifest = crate::archive::manifest::tests::sample();
        assert!(key_for(&manifest, None).unwrap().is_none());
        manifest.encryption = Some(
            Recipients::parse(std::slice::from_ref(&public))
                .unwrap()
                .unwrap()
                .encryption(),
        );
        let right = Arc::new(Identities::load(&path).unwrap());
        let wrong = Arc::new(Identities::load(&other_path).unwrap());
        assert!(key_for(&manifest, Some(&right)).unwrap().is_some());
        for identity in [None, Some(&wrong)] {
            let err = key_for(&manifest, identity).unwrap_err();
            assert_eq!(kind_of(&err), Kind::Usage);
            assert!(err.to_string().contains(&public), "{err}");
        }
        let err = key_for(&manifest, Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains(&other_public), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Untrusted chunk bytes: garbage and damaged age files fail cleanly.
        #[test]
        fn opening_damaged_or_hostile_bytes_never_panics(
            garbage in proptest::collection::vec(any::<u8>(), 0..600),
            pos in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (path, public, _) = keypair(dir.path(), "k");
            let identity = Identities::load(&path).unwrap();
            let _ = identity.open(&garbage);
            let mut prefixed = b"age-encryption.org/v1\n".to_vec();
            prefixed.extend_from_slice(&garbage);
            let _ = identity.open(&prefixed);
            let recipients = Recipients::parse(&[public]).unwrap().unwrap();
            let mut sealed = seal_all(&recipients, &garbage);
            let i = pos % sealed.len();
            let flipped = sealed[i] ^ byte.max(1);
            sealed[i] = flipped;
            prop_assert!(identity.open(&sealed).is_err());
        }
    }
}
