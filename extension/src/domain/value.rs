//! Values as lockbox holds them: text and bytes that may be secret (zeroized when the last
//! copy is dropped, never shown by `Debug`), the short labels most parameters share, and
//! the times AWS reports.

use std::fmt;

use base64::Engine as _;
use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

/// A value that may be secret. Serializes as the plain string (it is what function code
/// asked for), prints as a length only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Takes ownership of a value; the `String` is wiped when this is dropped.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value itself, for serialization and JSON-key extraction.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Binary secret data, served base64-encoded as the AWS API does.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of the bytes; they are wiped when this is dropped.
    pub fn new(value: Vec<u8>) -> Self {
        Self(Zeroizing::new(value))
    }

    /// How many bytes the value holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.0));
        s.serialize_str(&encoded)
    }
}

/// A short string that almost always has one of a few values (a parameter's type and data
/// type): those are shared statics, so thousands of cached parameters do not each hold
/// their own copy.
pub type Label = std::borrow::Cow<'static, str>;

/// The [`Label`] for `text`, without an allocation when it is a common one.
pub fn label(text: &str) -> Label {
    const COMMON: [&str; 6] = [
        "String",
        "StringList",
        "SecureString",
        "text",
        "aws:ec2:image",
        "aws:ssm:integration",
    ];
    match COMMON.iter().find(|c| **c == text) {
        Some(common) => Label::Borrowed(common),
        None => Label::Owned(text.to_owned()),
    }
}

/// A time AWS reported, to the millisecond the AWS layer shows. Kept as a number and
/// formatted only when served: each cached value then holds one word for it instead of a
/// 24-character string in an allocation of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Milliseconds since the epoch with the sign bit flipped: years 0 to 9999 never reach
    /// `i64::MIN`, so this is never zero, and `Option<Timestamp>` stays 8 bytes.
    flipped_millis: std::num::NonZeroI64,
}

// One word, with its `Option` too: thousands of cached values carry one or two.
const _: () = assert!(std::mem::size_of::<Option<Timestamp>>() == 8);

impl Timestamp {
    /// The time `secs` seconds and `nanos` nanoseconds after the Unix epoch, or `None` when
    /// it cannot be written in the AWS layer's four-digit year (outside years 0 to 9999).
    pub fn new(secs: i64, nanos: u32) -> Option<Self> {
        let year = time::OffsetDateTime::from_unix_timestamp(secs).ok()?.year();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let millis = secs * 1000 + i64::from(nanos / 1_000_000);
        Some(Self {
            flipped_millis: std::num::NonZeroI64::new(millis ^ i64::MIN)?,
        })
    }

    fn millis(self) -> i64 {
        self.flipped_millis.get() ^ i64::MIN
    }
}

/// RFC 3339 with milliseconds and `Z`, as the AWS layer writes it. Digits are written into
/// a stack buffer: this runs on every cache hit that returns a parameter or secret, where a
/// format description and a `String` cost a measurable share of the request.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.millis();
        let at = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
            .map_err(|_| fmt::Error)?;
        let (year, month, day) = at.to_calendar_date();
        let (hour, minute, second) = at.to_hms();
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields = [
            (0..4, year.unsigned_abs()),
            (5..7, u32::from(u8::from(month))),
            (8..10, u32::from(day)),
            (11..13, u32::from(hour)),
            (14..16, u32::from(minute)),
            (17..19, u32::from(second)),
            (20..23, millis.rem_euclid(1000) as u32),
        ];
        for (range, mut n) in fields {
            for digit in text[range].iter_mut().rev() {
                *digit = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_back_to_the_millisecond_across_their_range() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (-1, 999_000_000, "1969-12-31T23:59:59.999Z"),
            (1_668_587_045, 571_999_999, "2022-11-16T08:24:05.571Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000Z"),
        ];
        for (secs, nanos, text) in cases {
            let at = Timestamp::new(secs, nanos).expect(text);
            assert_eq!(at.to_string(), text);
        }
        assert_eq!(Timestamp::new(253_402_300_800, 0), None);
        assert_eq!(std::mem::size_of::<Option<Timestamp>>(), 8);
    }

    #[test]
    fn debug_never_shows_values() {
        assert!(!format!("{:?}", SecretText::new("hunter2".into())).contains("hunter2"));
        assert!(!format!("{:?}", SecretBytes::new(b"topsecret".to_vec())).contains("topsecret"));
    }
}
