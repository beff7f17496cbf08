//! Payment documents: card numbers (Luhn) and Brazilian tax ids (CPF, CNPJ check digits).

/// Luhn checksum of a digit string.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.len() < 12 || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

pub(crate) fn digits_of(raw: &str) -> Vec<u32> {
    raw.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn check_digit(digits: &[u32], weights: &[u32]) -> u32 {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    let r = sum % 11;
    if r < 2 {
        0
    } else {
        11 - r
    }
}

/// Both check digits of a CPF or CNPJ: the first over all but the last two digits with `w1`,
/// the second over all but the last with `w2`; not all digits equal.
fn check_digits_ok<const N: usize>(d: [u32; N], w1: &[u32], w2: &[u32]) -> bool {
    if d.iter().all(|x| Some(x) == d.first()) {
        return false;
    }
    // `zip` stops at the weights: w1 covers N − 2 digits, w2 covers N − 1.
    let first = check_digit(&d, w1);
    let second = check_digit(&d, w2);
    d.get(N - 2) == Some(&first) && d.get(N - 1) == Some(&second)
}

/// A valid CPF (11 digits, punctuation allowed, not all equal, both check digits right).
pub fn cpf_valid(raw: &str) -> bool {
    match <[u32; 11]>::try_from(digits_of(raw)) {
        Ok(d) => check_digits_ok(
            d,
            &[10, 9, 8, 7, 6, 5, 4, 3, 2],
            &[11, 10, 9, 8, 7, 6, 5, 4, 3, 2],
        ),
        Err(_) => false,
    }
}

/// A valid CNPJ (14 digits, punctuation allowed, not all equal, both check digits right).
pub fn cnpj_valid(raw: &str) -> bool {
    match <[u32; 14]>::try_from(digits_of(raw)) {
        Ok(d) => check_digits_ok(
            d,
            &[5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2],
            &[6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2],
        ),
        Err(_) => false,
    }
}
