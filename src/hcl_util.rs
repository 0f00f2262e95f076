//! What the config and policy parsers share around hcl-edit: a guard in front of its parser, and turning its byte
//! spans into line numbers for error messages.
//!
//! hcl-edit's parser is recursive: a few hundred nested brackets, or a long chain of operators, overflow a thread's
//! stack and abort the process instead of returning an error. Config files and policies are user input, so both are
//! checked here first, and rejected with a clear message when they exceed limits no real file comes near.

/// The 1-based line of `text` holding the start of `span`, or `fallback` when the parser gave no span.
pub(crate) fn line_of(text: &str, span: Option<std::ops::Range<usize>>, fallback: usize) -> usize {
    let Some(span) = span else { return fallback };
    let bytes = text.as_bytes();
    let before = bytes.get(..span.start).unwrap_or(bytes);
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Most nesting levels (blocks, brackets, strings, interpolations) `check_parser_limits` lets through.
const MAX_NESTING: usize = 32;
/// Most operators (and template directives) `check_parser_limits` lets through.
const MAX_OPERATORS: usize = 64;

/// Rejects input that would make the recursive HCL parser recurse deeply, before it sees it; returns the byte
/// offset where a limit was crossed.
///
/// A small lexer: comments, quoted strings (with their `${ }` and `%{ }` templates) and identifiers (which may
/// contain `-`) are skipped as HCL reads them, so `*`, `/` and `-` in paths and comments do not count. Heredocs
/// are not worth lexing: from the first `<<` on, every opening bracket and operator character counts, and
/// nothing closes. A real policy needs three levels and no operators at all.
pub(crate) fn check_parser_limits(text: &str) -> Result<(), (usize, String)> {
    #[derive(PartialEq)]
    enum Frame {
        Code,
        Str,
    }
    const OPERATOR_BYTES: &[u8] = b"!+-*/%<>&|?:";
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut stack: Vec<Frame> = Vec::new();
    let mut operators = 0;
    let mut heredoc_openings = 0;
    let mut in_heredoc = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = at(i);
        let mut step = 1;
        if in_heredoc {
            if b"{[(".contains(&c) {
                heredoc_openings += 1;
            } else if OPERATOR_BYTES.contains(&c) || c == b'=' {
                operators += 1;
            }
        } else if stack.last() == Some(&Frame::Str) {
            match (c, at(i + 1), at(i + 2)) {
                (b'\\', _, _) => step = 2,
                (b'"', _, _) => {
                    stack.pop();
                }
                // `$${` and `%%{` are escapes, not templates.
                (b'$', b'$', b'{') | (b'%', b'%', b'{') => step = 3,
                (b'$' | b'%', b'{', _) => {
                    // A directive (`%{ if x }`) nests what follows it up to its `%{ end... }`.
                    if c == b'%' {
                        operators += 1;
                    }
                    stack.push(Frame::Code);
                    step = 2;
                }
                _ => {}
            }
        } else {
            let rest = bytes.get(i..).unwrap_or_default();
            match (c, at(i + 1)) {
                (b'#', _) | (b'/', b'/') => step = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len()).max(1),
                (b'/', b'*') => {
                    let body = rest.get(2..).unwrap_or_default();
                    step = body.windows(2).position(|w| w == b"*/").map_or(rest.len(), |end| end + 4);
                }
                (b'"', _) => stack.push(Frame::Str),
                (b'<', b'<') => in_heredoc = true,
                (b'{' | b'[' | b'(', _) => stack.push(Frame::Code),
                (b'}' | b']' | b')', _) if stack.last() == Some(&Frame::Code) => {
                    stack.pop();
                }
                (b'=', b'=') => {
                    operators += 1;
                    step = 2;
                }
                (c, _) if c.is_ascii_alphabetic() || c == b'_' => {
                    step = rest
                        .iter()
                        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                        .unwrap_or(rest.len());
                }
                (c, _) if OPERATOR_BYTES.contains(&c) => operators += 1,
                _ => {}
            }
        }
        if stack.len() + heredoc_openings > MAX_NESTING {
            return Err((i, format!("nested too deeply (more than {MAX_NESTING} levels)")));
        }
        if operators > MAX_OPERATORS {
            return Err((i, format!("too many operators (more than {MAX_OPERATORS}): use literal values")));
        }
        i += step.max(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_inputs_within_the_limits_leave_the_parser_room() {
        // Each passes the guard, and hcl-edit must then parse it (successfully or not) without overflowing a test
        // thread's 2 MiB stack in a debug build; an overflow aborts the test binary.
        let ops = "1 + ".repeat(60);
        let cases = [
            format!("a = {}{ops}1{}\n", "[".repeat(32), "]".repeat(32)),
            format!("a = {}{ops}1{}\n", "\"${".repeat(16), "}\"".repeat(16)),
            format!("a = {}{}x{}\n", "(".repeat(32), "-".repeat(64), ")".repeat(32)),
            format!("a = {}{}1{}\n", "(".repeat(32), "x ? 1 : ".repeat(32), ")".repeat(32)),
            format!("a = \"{}{}\"\n", "%{ if x }".repeat(32), "%{ endif }".repeat(32)),
            format!("{}a = {}1{}\n", "b {\n".repeat(16), "[".repeat(16), "]".repeat(16) + "\n" + &"}\n".repeat(16)),
        ];
        for text in cases {
            assert_eq!(check_parser_limits(&text), Ok(()), "{text:?}");
            let _ = hcl::edit::parser::parse_body(&text);
        }
    }

    #[test]
    fn one_step_over_a_limit_is_refused() {
        let nested = format!("a = {}1{}\n", "[".repeat(33), "]".repeat(33));
        assert_eq!(
            check_parser_limits(&nested).map_err(|e| e.1),
            Err("nested too deeply (more than 32 levels)".into())
        );
        let operators = format!("a = {}1\n", "1 + ".repeat(65));
        assert_eq!(
            check_parser_limits(&operators).map_err(|e| e.1),
            Err("too many operators (more than 64): use literal values".into())
        );
    }
}
