//! Random values that honour a [`Policy`] exactly.
//!
//! Bytes come from the operating system's CSPRNG ([`RandomSource::Os`], via `rand`'s
//! `OsRng`) or from KMS `GenerateRandom` ([`RandomSource::Kms`]) when the input asks for it.
//! Each character is drawn by rejection sampling, so every allowed character is equally
//! likely (no modulo bias). With `requireEachClass`, one character is drawn from each class,
//! the rest from the whole alphabet, and the result is shuffled (Fisher-Yates, also
//! unbiased) so the required characters do not sit at predictable positions.
//! Random bytes and the value under construction live in zeroized buffers.

use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::policy::Policy;
use crate::value::SecretValue;

/// KMS `GenerateRandom` returns at most this many bytes per call.
const KMS_MAX_BYTES: usize = 1024;
/// Bytes fetched from the OS at a time.
const OS_CHUNK: usize = 256;

/// Which random source the input asked for (`"randomSource"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The operating system's CSPRNG (default).
    #[default]
    Os,
    /// KMS `GenerateRandom` (needs `kms:GenerateRandom`).
    Kms,
}

/// Where random bytes come from.
#[derive(Debug, Clone)]
pub enum RandomSource {
    /// The operating system's CSPRNG.
    Os,
    /// KMS `GenerateRandom`.
    Kms(aws_sdk_kms::Client),
}

impl RandomSource {
    /// The source for `kind`, using `kms` when KMS is asked for.
    pub fn new(kind: SourceKind, kms: &aws_sdk_kms::Client) -> Self {
        match kind {
            SourceKind::Os => Self::Os,
            SourceKind::Kms => Self::Kms(kms.clone()),
        }
    }
}

/// Random bytes could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The OS CSPRNG failed.
    #[error("operating system random source failed: {0}")]
    Os(String),
    /// KMS `GenerateRandom` failed.
    #[error("KMS GenerateRandom failed: {0}")]
    Kms(String),
}

/// A buffer of random bytes, refilled from the source as needed.
struct Bytes<'a> {
    source: &'a RandomSource,
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn new(source: &'a RandomSource) -> Self {
        Self {
            source,
            buf: Zeroizing::new(Vec::new()),
            pos: 0,
        }
    }

    async fn refill(&mut self) -> Result<(), GenerateError> {
        // Assigning a new Zeroizing buffer drops (and so wipes) the old one.
        self.buf = match self.source {
            RandomSource::Os => {
                let mut chunk = Zeroizing::new(vec![0u8; OS_CHUNK]);
                OsRng
                    .try_fill_bytes(&mut chunk)
                    .map_err(|e| GenerateError::Os(e.to_string()))?;
                chunk
            }
            RandomSource::Kms(kms) => {
                let out = kms
                    .generate_random()
                    .number_of_bytes(KMS_MAX_BYTES as i32)
                    .send()
                    .await
                    // Not DisplayErrorContext: its raw response could hold random bytes.
                    .map_err(|e| GenerateError::Kms(crate::error_chain(&e)))?;
                let blob = out
                    .plaintext
                    .ok_or_else(|| GenerateError::Kms("response had no Plaintext".into()))?;
                let bytes = Zeroizing::new(blob.into_inner());
                if bytes.is_empty() {
                    return Err(GenerateError::Kms("response had no bytes".into()));
                }
                bytes
            }
        };
        self.pos = 0;
        Ok(())
    }

    async fn byte(&mut self) -> Result<u8, GenerateError> {
        if self.pos >= self.buf.len() {
            self.refill().await?;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// A uniform index in `0..n` (`1 <= n <= 65536`), by rejection sampling.
    async fn below(&mut self, n: usize) -> Result<usize, GenerateError> {
        debug_assert!((1..=65536).contains(&n));
        if n <= 256 {
            // Accept only bytes below the largest multiple of n, so each residue is equally
            // likely.
            let limit = 256 - (256 % n);
            loop {
                let b = usize::from(self.byte().await?);
                if b < limit {
                    return Ok(b % n);
                }
            }
        } else {
            let limit = 65536 - (65536 % n);
            loop {
                let hi = usize::from(self.byte().await?);
                let lo = usize::from(self.byte().await?);
                let v = (hi << 8) | lo;
                if v < limit {
                    return Ok(v % n);
                }
            }
        }
    }
}

/// Generates a value that satisfies `policy` exactly.
pub async fn generate(
    policy: &Policy,
    source: &RandomSource,
) -> Result<SecretValue, GenerateError> {
    let mut bytes = Bytes::new(source);
    // Capacity is exact, so the buffer never reallocates and leaves no unwiped copy behind.
    let mut out: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(policy.length()));
    if policy.require_each_class() {
        for class in policy.classes() {
            let i = bytes.below(class.len()).await?;
            out.push(class[i]);
        }
    }
    let alphabet = policy.alphabet();
    while out.len() < policy.length() {
        let i = bytes.below(alphabet.len()).await?;
        out.push(alphabet[i]);
    }
    if policy.require_each_class() {
        // Fisher-Yates: move the per-class characters to uniformly random positions.
        for i in (1..out.len()).rev() {
            let j = bytes.below(i + 1).await?;
            out.swap(i, j);
        }
    }
    // All characters are ASCII, so this cannot fail; the buffer moves, it is not copied.
    let text = String::from_utf8(std::mem::take(&mut *out))
        .map_err(|_| GenerateError::Os("generated bytes were not ASCII".into()))?;
    Ok(SecretValue::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{CharClass, PolicySpec};
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn class_strategy() -> impl Strategy<Value = Vec<CharClass>> {
        proptest::sample::subsequence(CharClass::ALL.to_vec(), 1..=4).prop_shuffle()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any valid policy yields a value of exactly its length, only allowed characters,
        /// none of the excluded ones, and every class when required.
        #[test]
        fn generated_values_honour_any_policy(
            length in 1usize..300,
            classes in class_strategy(),
            exclude in proptest::collection::vec(33u8..127, 0..40),
            require_each_class in any::<bool>(),
        ) {
            let spec = PolicySpec {
                length,
                classes: classes.clone(),
                exclude: String::from_utf8(exclude.clone()).unwrap(),
                require_each_class,
            };
            // Policies that cannot be satisfied are rejected at compile time; skip them.
            let Ok(policy) = spec.compile() else { return Ok(()) };
            let value = block_on(generate(&policy, &RandomSource::Os)).unwrap();
            let s = value.expose().as_bytes();
            prop_assert_eq!(s.len(), length);
            for b in s {
                prop_assert!(!exclude.contains(b), "excluded {} present", *b as char);
                prop_assert!(classes.iter().any(|c| c.chars().contains(b)));
            }
            if require_each_class {
                for class in &classes {
                    prop_assert!(s.iter().any(|b| class.chars().contains(b)));
                }
            }
            prop_assert!(policy.check(&value).is_ok());
        }
    }

    #[test]
    fn long_values_use_the_two_byte_sampler() {
        let policy = PolicySpec {
            length: 5000,
            ..PolicySpec::default()
        }
        .compile()
        .unwrap();
        let value = block_on(generate(&policy, &RandomSource::Os)).unwrap();
        assert_eq!(value.len(), 5000);
        assert!(policy.check(&value).is_ok());
    }

    #[test]
    fn every_character_of_a_small_alphabet_appears() {
        // A crude uniformity check: 2000 draws from 3 characters hit each one often.
        let policy = PolicySpec {
            length: 2000,
            classes: vec![CharClass::Digits],
            exclude: "3456789".into(),
            require_each_class: false,
        }
        .compile()
        .unwrap();
        let value = block_on(generate(&policy, &RandomSource::Os)).unwrap();
        for c in ['0', '1', '2'] {
            let n = value.expose().chars().filter(|&x| x == c).count();
            assert!((500..=830).contains(&n), "{c}: {n}");
        }
    }

    #[test]
    fn two_values_differ() {
        let policy = PolicySpec::default().compile().unwrap();
        let a = block_on(generate(&policy, &RandomSource::Os)).unwrap();
        let b = block_on(generate(&policy, &RandomSource::Os)).unwrap();
        assert_ne!(a, b);
    }
}
