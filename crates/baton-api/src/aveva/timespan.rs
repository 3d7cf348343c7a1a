//! AVEVA's `FailoverTimeout`: accepted as a .NET time-span (`hh:mm:ss`, `hh:mm:ss.fffffff`,
//! `d.hh:mm:ss[.fffffff]`), an ISO-8601 duration (`PT30S`, `P1DT2H`), or integer milliseconds
//! (a JSON number or a string of digits, as the seed's "in milliseconds" says). Emitted as a
//! .NET time-span, `[d.]hh:mm:ss[.fffffff]`.

use serde_json::Value;

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

/// Parses a JSON `FailoverTimeout` value into milliseconds. The error says what was wrong.
pub fn parse(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            format!("FailoverTimeout {n} is not a whole, non-negative number of milliseconds")
        }),
        Value::String(s) => parse_str(s.trim()),
        other => Err(format!(
            "FailoverTimeout must be a time-span string such as \"00:00:30\" or a number of milliseconds, not {}",
            json_kind(other)
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_str(s: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "FailoverTimeout \"{s}\" is not a time-span; use hh:mm:ss, d.hh:mm:ss, hh:mm:ss.fffffff, \
             an ISO-8601 duration such as PT30S, or whole milliseconds"
        )
    };
    if s.is_empty() {
        return Err(invalid());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map_err(|_| invalid());
    }
    if s.starts_with('P') || s.starts_with('p') {
        return parse_iso8601(&s[1..]).ok_or_else(invalid);
    }
    parse_dotnet(s).ok_or_else(invalid)
}

/// `[d.]hh:mm:ss[.fffffff]`, with hours < 24, minutes and seconds < 60, at most 7 fraction
/// digits (ticks). Fractions below a millisecond are truncated.
fn parse_dotnet(s: &str) -> Option<u64> {
    let (days, rest) = match s.split_once(':') {
        Some((head, _)) if head.contains('.') => {
            let (d, _) = head.split_once('.')?;
            (digits(d)?, &s[d.len() + 1..])
        }
        _ => (0, s),
    };
    let mut parts = rest.splitn(3, ':');
    let hours = digits(parts.next()?)?;
    let minutes = digits(parts.next()?)?;
    let seconds_part = parts.next()?;
    let (seconds, fraction_ms) = match seconds_part.split_once('.') {
        Some((sec, frac)) => {
            if frac.is_empty() || frac.len() > 7 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{frac:0<3}");
            (digits(sec)?, padded[..3].parse::<u64>().ok()?)
        }
        None => (digits(seconds_part)?, 0),
    };
    if hours >= 24 || minutes >= 60 || seconds >= 60 {
        return None;
    }
    days.checked_mul(MS_PER_DAY)?.checked_add(
        hours * MS_PER_HOUR + minutes * MS_PER_MINUTE + seconds * MS_PER_SECOND + fraction_ms,
    )
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The part after `P`: `[nD][T[nH][nM][n[.f]S]]`, at least one component.
fn parse_iso8601(s: &str) -> Option<u64> {
    let (date, time) = match s.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (s, None),
    };
    let mut total: u64 = 0;
    let mut any = false;
    if !date.is_empty() {
        let days = date.strip_suffix(['D', 'd']).and_then(digits)?;
        total = days.checked_mul(MS_PER_DAY)?;
        any = true;
    }
    if let Some(mut rest) = time {
        for (unit, scale) in [('H', MS_PER_HOUR), ('M', MS_PER_MINUTE)] {
            if let Some(pos) = rest.find([unit, unit.to_ascii_lowercase()]) {
                total = total.checked_add(digits(&rest[..pos])?.checked_mul(scale)?)?;
                rest = &rest[pos + 1..];
                any = true;
            }
        }
        if !rest.is_empty() {
            let secs = rest.strip_suffix(['S', 's'])?;
            let ms = match secs.split_once('.') {
                Some((whole, frac)) => {
                    if frac.is_empty()
                        || frac.len() > 9
                        || !frac.bytes().all(|b| b.is_ascii_digit())
                    {
                        return None;
                    }
                    digits(whole)? * MS_PER_SECOND
                        + format!("{frac:0<3}")[..3].parse::<u64>().ok()?
                }
                None => digits(secs)? * MS_PER_SECOND,
            };
            total = total.checked_add(ms)?;
            any = true;
        }
    }
    any.then_some(total)
}

/// Formats milliseconds as a .NET time-span: `hh:mm:ss`, with `d.` before it for a day or
/// more and `.fffffff` after it when there is a fraction.
pub fn format(ms: u64) -> String {
    let days = ms / MS_PER_DAY;
    let hours = ms % MS_PER_DAY / MS_PER_HOUR;
    let minutes = ms % MS_PER_HOUR / MS_PER_MINUTE;
    let seconds = ms % MS_PER_MINUTE / MS_PER_SECOND;
    let millis = ms % MS_PER_SECOND;
    let mut out = String::new();
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{hours:02}:{minutes:02}:{seconds:02}"));
    if millis > 0 {
        out.push_str(&format!(".{:07}", millis * 10_000));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use test_case::test_case;

    use super::*;

    #[test_case(json!("00:00:30"), 30_000 ; "hh mm ss")]
    #[test_case(json!("00:01:00"), 60_000 ; "one minute as the adapter docs write it")]
    #[test_case(json!("00:00:30.5"), 30_500 ; "fraction")]
    #[test_case(json!("00:00:01.0000001"), 1_000 ; "ticks below a millisecond are truncated")]
    #[test_case(json!("1.00:00:00"), 86_400_000 ; "one day")]
    #[test_case(json!("PT30S"), 30_000 ; "iso seconds")]
    #[test_case(json!("PT1M30.25S"), 90_250 ; "iso minutes and fractional seconds")]
    #[test_case(json!("P1D"), 86_400_000 ; "iso day")]
    #[test_case(json!("PT1H"), 3_600_000 ; "iso hour")]
    #[test_case(json!("30000"), 30_000 ; "milliseconds as a string")]
    #[test_case(json!(30000), 30_000 ; "milliseconds as a number")]
    fn accepted_time_spans(value: Value, ms: u64) {
        assert_eq!(parse(&value), Ok(ms));
    }

    #[test_case(json!("") ; "empty")]
    #[test_case(json!("abc") ; "words")]
    #[test_case(json!("00:60:00") ; "sixty minutes")]
    #[test_case(json!("24:00:00") ; "twenty four hours")]
    #[test_case(json!("00:00:30.") ; "dangling dot")]
    #[test_case(json!("-00:00:30") ; "negative")]
    #[test_case(json!("PT") ; "iso without components")]
    #[test_case(json!("P1DT") ; "iso dangling T")]
    #[test_case(json!(-5) ; "negative number")]
    #[test_case(json!(1.5) ; "fractional number")]
    #[test_case(json!(true) ; "boolean")]
    #[test_case(json!(null) ; "null")]
    fn refused_time_spans(value: Value) {
        assert!(parse(&value).is_err(), "{value} should be refused");
    }

    #[test_case(30_000, "00:00:30")]
    #[test_case(30_500, "00:00:30.5000000")]
    #[test_case(86_400_000, "1.00:00:00")]
    #[test_case(3_723_000, "01:02:03")]
    fn formatted_time_spans(ms: u64, text: &str) {
        assert_eq!(format(ms), text);
        assert_eq!(parse(&Value::String(text.into())), Ok(ms), "formatting round-trips");
    }
}
