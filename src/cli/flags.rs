//! Parsers for the values of Vault-style options: durations (`-ttl=1h`), booleans (`-renewable=false`) and
//! `key=value` pairs (`-metadata=team=ops`). They are clap value parsers: a bad value is a usage error.

/// Parses a duration the way Vault's duration options accept one: a bare number of seconds (`90`), or numbers
/// with units (`1h30m`, `45s`, `500ms`, `7d`; units `d`, `h`, `m`, `s`, `ms`). Returns whole seconds (sub-second
/// parts are dropped).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid duration {text:?} (expected e.g. 30s, 5m, 1h30m, or a number of seconds)");
    let s = text.trim();
    if s.is_empty() {
        return Err(invalid());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs);
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms_per_unit: u64 = match &rest[..unit_len] {
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1000,
            "ms" => 1,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total_ms = n.checked_mul(ms_per_unit).and_then(|ms| total_ms.checked_add(ms)).ok_or_else(invalid)?;
    }
    Ok(total_ms / 1000)
}

/// A whole number of seconds the way Go prints a `time.Duration` (`1h0m0s`, `5m30s`, `45s`, `0s`): the form
/// the `vault` CLI sends durations in.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Parses a boolean as Go's `strconv.ParseBool` does (`true`, `false`, `1`, `0`, `t`, `f`, `TRUE`, ...).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {text:?} (expected true or false)")),
    }
}

/// Parses `key=value` (the value may contain `=` and may be empty; the key may not be empty).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(format!("invalid key=value pair {text:?}: the key is empty")),
        None => Err(format!("invalid key=value pair {text:?}: missing '='")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1h0m0s"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("1500ms"), Ok(1));
        assert_eq!(parse_duration(" 10m "), Ok(600));
        for bad in ["", "h", "1x", "1.5h", "-1s", "1h 2m", "m5"] {
            assert!(parse_duration(bad).unwrap_err().contains("invalid duration"), "{bad:?}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(45), "45s");
        assert_eq!(go_duration(330), "5m30s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(2_764_800), "768h0m0s");
        for secs in [0, 59, 61, 3599, 3601, 90_061] {
            assert_eq!(parse_duration(&go_duration(secs)), Ok(secs));
        }
    }

    #[test]
    fn booleans_and_pairs() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("F"), Ok(false));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("=b").unwrap_err().contains("key is empty"));
        assert!(parse_key_value("ab").unwrap_err().contains("missing '='"));
    }
}
