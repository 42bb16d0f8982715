//! Timestamps at the output edge: the model keeps `SystemTime`s; these format them.

use std::time::{SystemTime, UNIX_EPOCH};

/// `HH:MM:SS.micros` (UTC) for trace lines.
pub fn time_of_day(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:06}", secs / 3600, secs / 60 % 60, secs % 60, since.subsec_micros())
}

/// RFC 3339 UTC with microseconds, for JSON.
pub fn rfc3339(t: SystemTime) -> String {
    match Rfc3339::of(t) {
        Some(text) => text.as_str().to_string(),
        None => {
            let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            let (y, m, d) = civil_from_days((since.as_secs() / 86_400) as i64);
            format!("{y:04}-{m:02}-{d:02}T{}Z", time_of_day(t))
        }
    }
}

/// [`rfc3339`] written into a fixed buffer, without allocating (a trace prints one per event):
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, 27 bytes.
struct Rfc3339([u8; 27]);

impl Rfc3339 {
    /// None for years past 9999 (which need more than four digits).
    fn of(t: SystemTime) -> Option<Self> {
        thread_local! {
            /// The last second written and its text up to the seconds: events come in bursts
            /// within one second, so the date is worked out once per second, not per event.
            static LAST: std::cell::Cell<Option<(u64, [u8; 27])>> = const { std::cell::Cell::new(None) };
        }
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let mut out = match LAST.with(std::cell::Cell::get) {
            Some((last, text)) if last == secs => text,
            _ => {
                let text = Self::to_the_second(secs)?;
                LAST.with(|cell| cell.set(Some((secs, text))));
                text
            }
        };
        write_digits(&mut out, 20, 6, since.subsec_micros());
        Some(Self(out))
    }

    /// `YYYY-MM-DDTHH:MM:SS.000000Z` for whole seconds since the epoch.
    fn to_the_second(secs: u64) -> Option<[u8; 27]> {
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
        let day = secs % 86_400;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        write_digits(&mut out, 0, 4, y);
        write_digits(&mut out, 5, 2, m);
        write_digits(&mut out, 8, 2, d);
        write_digits(&mut out, 11, 2, (day / 3600) as u32);
        write_digits(&mut out, 14, 2, (day / 60 % 60) as u32);
        write_digits(&mut out, 17, 2, (day % 60) as u32);
        Some(out)
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `value`'s last `width` decimal digits into `out[at..at + width]`, zero-padded.
fn write_digits(out: &mut [u8; 27], at: usize, width: usize, mut value: u32) {
    for slot in out[at..at + width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Howard Hinnant's days-from-civil inverse (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Serializes a timestamp as [`rfc3339`] (for `#[serde(serialize_with)]`).
pub fn serialize_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    match Rfc3339::of(*t) {
        Some(text) => s.serialize_str(text.as_str()),
        None => s.serialize_str(&rfc3339(*t)),
    }
}

/// Parses what [`rfc3339`] writes (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, UTC); `None` for anything
/// else (offsets other than `Z` are not accepted).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (h, min, s): (u64, u64, u64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        if !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()?
    };
    let days = days_from_civil(y, m, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + min * 60 + s;
    Some(UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

/// Howard Hinnant's days-from-civil (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Deserializes what [`serialize_rfc3339`] writes (for `#[serde(deserialize_with)]`).
pub fn deserialize_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse_rfc3339(&text).ok_or_else(|| {
        serde::de::Error::custom(format!("{text:?} is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SS.ffffffZ)"))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_wall_time() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_795_000_000_123_456_789);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        assert_eq!(time_of_day(t), "11:06:40.123456");
        // A leap day and the epoch itself.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc3339(leap), "2024-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // Before the epoch: shown as the epoch.
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000000Z");
    }

    /// The buffer formatter agrees with the formatting it replaced, day by day over four
    /// centuries (leap years, century rules) and across a day's seconds; past year 9999 the
    /// general path writes the longer year.
    #[test]
    fn the_buffer_matches_the_formatter() {
        let reference = |t: SystemTime| {
            let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            let (y, m, d) = civil_from_days((since.as_secs() / 86_400) as i64);
            format!("{y:04}-{m:02}-{d:02}T{}Z", time_of_day(t))
        };
        for day in (0..146_097u64 + 365).step_by(7) {
            let t = UNIX_EPOCH + Duration::new(day * 86_400 + (day * 7_919) % 86_400, (day as u32 % 1000) * 1_000_123);
            assert_eq!(rfc3339(t), reference(t));
        }
        for sec in (0..86_400u64).step_by(61) {
            let t = UNIX_EPOCH + Duration::new(1_795_000_000 + sec, 999_999_999);
            assert_eq!(rfc3339(t), reference(t));
        }
        // Within one second (the remembered date), across a second and a day boundary, and back.
        let midnight = 1_795_046_400; // 2026-11-19T00:00:00Z
        for (secs, micros) in
            [(midnight - 1, 1), (midnight - 1, 999_999), (midnight, 0), (midnight, 7), (midnight - 1, 5)]
        {
            let t = UNIX_EPOCH + Duration::new(secs, micros * 1000);
            assert_eq!(rfc3339(t), reference(t));
        }
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::new(midnight, 7_000)), "2026-11-19T00:00:00.000007Z");
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800); // 10000-01-01
        assert_eq!(rfc3339(far), "10000-01-01T00:00:00.000000Z");
        #[derive(serde::Serialize)]
        struct At(#[serde(serialize_with = "serialize_rfc3339")] SystemTime);
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(serde_json::to_string(&At(t)).unwrap(), "\"2026-11-18T11:06:40.123456Z\"");
        assert_eq!(serde_json::to_string(&At(far)).unwrap(), "\"10000-01-01T00:00:00.000000Z\"");
    }

    #[test]
    fn parses_what_it_writes() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            UNIX_EPOCH + Duration::from_secs(1_709_164_800),
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(UNIX_EPOCH + Duration::from_secs(1_795_000_000)));
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40+01:00"), None);
        assert_eq!(parse_rfc3339("2026-13-18T11:06:40Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
