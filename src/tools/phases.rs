//! The open loop's phases: `RATE:SECONDS`.

/// One stretch of constant arrival rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub rate: f64,
    pub seconds: f64,
}

/// `RATE:SECONDS`, e.g. `500:15`.
pub fn parse_phase(s: &str) -> Result<Phase, String> {
    let (rate, seconds) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected RATE:SECONDS"))?;
    let rate: f64 = rate.parse().map_err(|_| format!("{s:?}: bad rate"))?;
    let seconds: f64 = seconds.parse().map_err(|_| format!("{s:?}: bad seconds"))?;
    if !(rate > 0.0 && rate <= 100_000.0 && seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("{s:?}: rate in (0, 100000], seconds in (0, 3600]"));
    }
    Ok(Phase { rate, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_phase("500:15"),
            Ok(Phase {
                rate: 500.0,
                seconds: 15.0
            })
        );
        for bad in ["500", "x:1", "1:x", "0:10", "10:0", "1e9:1", "-1:1"] {
            assert!(parse_phase(bad).is_err(), "{bad}");
        }
    }
}
