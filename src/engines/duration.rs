//! Durations as Vault reads and writes them: Go's `time.ParseDuration` syntax (`1h30m`, `1.5s`, `300ms`), plain
//! integers as seconds, and `Nd` for days (Vault's `parseutil.ParseDurationSecond`); Go's `Duration.String()` for
//! output. Shared by every endpoint that takes a TTL or an age.

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Formats whole seconds like Go's `time.Duration.String()`: `0s`, `59s`, `1m0s`, `3h25m19s`, `-1s`.
pub fn format_duration_secs(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let abs = secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, (abs % 3600) / 60, abs % 60);
    let body = if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    };
    if secs < 0 {
        format!("-{body}")
    } else {
        body
    }
}

/// Parses a duration like Go's `time.ParseDuration` (`1h30m`, `1.5s`, `-2m`, `300ms`), into nanoseconds; the
/// error is Go's message.
pub fn parse_go_duration(input: &str) -> std::result::Result<i64, String> {
    let invalid = || format!("time: invalid duration \"{input}\"");
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(int_len);
        let mut value: u64 = 0;
        for d in int_part.bytes() {
            value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))).ok_or_else(invalid)?;
        }
        s = rest;
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut has_fraction = false;
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            has_fraction = frac_len > 0;
            let mut overflow = false;
            for d in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                match fraction.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))) {
                    Some(v) if v < (1 << 63) => {
                        fraction = v;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            s = &rest[frac_len..];
        }
        if int_len == 0 && !has_fraction {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration \"{input}\""));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit_nanos: u64 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit \"{unit}\" in duration \"{input}\"")),
        };
        let mut v = value.checked_mul(unit_nanos).filter(|v| *v <= 1 << 63).ok_or_else(invalid)?;
        if fraction > 0 {
            v = v.checked_add((fraction as f64 * (unit_nanos as f64 / scale)) as u64).ok_or_else(invalid)?;
            if v > 1 << 63 {
                return Err(invalid());
            }
        }
        total = total.checked_add(v).filter(|t| *t <= 1 << 63).ok_or_else(invalid)?;
    }
    if negative {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// Parses a duration the way Vault's `parseutil.ParseDurationSecond` does and returns whole seconds
/// (truncated toward zero, like `int(d.Seconds())`): an integer is seconds, `Nd` is days, anything else is a Go
/// duration. `""` is 0.
pub fn parse_duration_seconds(input: &str) -> std::result::Result<i64, String> {
    if input.is_empty() {
        return Ok(0);
    }
    if let Ok(secs) = input.parse::<i64>() {
        return secs.checked_mul(NANOS_PER_SEC).map(|_| secs).ok_or_else(|| "duration overflow".to_string());
    }
    if let Some(days) = input.strip_suffix('d') {
        let days: i64 = days.parse().map_err(|e| go_parse_int_error(days, &e))?;
        return days
            .checked_mul(86_400 * NANOS_PER_SEC)
            .map(|_| days * 86_400)
            .ok_or_else(|| "duration overflow".into());
    }
    Ok(parse_go_duration(input)? / NANOS_PER_SEC)
}

/// Go's `strconv.ParseInt` error text for `input`.
pub fn go_parse_int_error(input: &str, e: &std::num::ParseIntError) -> String {
    use std::num::IntErrorKind;
    let reason = match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
        _ => "invalid syntax",
    };
    format!("strconv.ParseInt: parsing \"{input}\": {reason}")
}
