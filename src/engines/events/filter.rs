//! Event subscription filters: the `filter` parameter of `GET /v1/sys/events/subscribe/{eventType}`.
//!
//! Vault evaluates that parameter as a [go-bexpr](https://github.com/hashicorp/go-bexpr) boolean expression against
//! every event; this module parses the subset of go-bexpr that makes sense for Vigil's events, once per subscription,
//! and evaluates it per event with no allocation.
//!
//! Accepted syntax (keywords are case-sensitive lowercase, whitespace is insignificant):
//!
//! - selectors: `event_type`, `operation`, `source_plugin_mount`, `data_path`, `namespace` (all strings), written
//!   bare or as a double-quoted JSON pointer (`"/data_path"`); any other selector is a parse error;
//! - `sel == v`, `sel != v`: exact string comparison;
//! - `v in sel`, `v not in sel`, `sel contains v`, `sel not contains v`: substring test;
//! - `sel matches v`, `sel not matches v`: unanchored regular expression match (RE2 syntax, `regex` crate);
//! - `sel is empty`, `sel is not empty`;
//! - `not`, `and`, `or` and parentheses; `not` binds tightest, then `and`, then `or`;
//! - values: double-quoted strings with Go escapes (`\" \\ \n \t \r \a \b \f \v \xHH \uHHHH \UHHHHHHHH`, octal
//!   `\ooo`), backquoted raw strings, or bare words made of `A-Z a-z 0-9 _ - . / : *`.
//!
//! Deliberately not supported: selectors into nested data (`a.b`, `a["b"]`), inline value lists (`["a", "b"]`),
//! numeric or boolean coercion (every field is a string). Differences from go-bexpr: a regular expression is
//! compiled, and rejected, at parse time rather than at first evaluation; bare values may contain `- : * .` anywhere;
//! keywords cannot be bare values (quote them); `\"` is allowed inside double-quoted strings. Expressions are limited
//! to 4096 characters and 64 levels of parentheses, so hostile input cannot exhaust the stack or memory.

use std::fmt::{self, Write as _};

use regex::{Regex, RegexBuilder};

/// Longest accepted expression, in characters.
const MAX_EXPRESSION_CHARS: usize = 4096;
/// Deepest accepted nesting of parentheses.
const MAX_NESTING_DEPTH: usize = 64;
/// Compiled-size limit for one regular expression, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest token text quoted in an error message before it is shortened.
const MAX_QUOTED_CHARS: usize = 40;

const KNOWN_SELECTORS: &str = "event_type, operation, source_plugin_mount, data_path, namespace";
const KEYWORDS: [&str; 8] = ["and", "or", "not", "in", "contains", "matches", "is", "empty"];
const ESCAPES: &str = r#"\" \\ \n \t \r \a \b \f \v \xHH \uHHHH \UHHHHHHHH \ooo"#;
const OPERATORS: &str = "==, !=, contains, not contains, matches, not matches, is empty, is not empty";

/// Values an event exposes to filters.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilterFields<'a> {
    /// The event type, e.g. `kv-v2/data-write`.
    pub event_type: &'a str,
    /// The operation, e.g. `data-write`.
    pub operation: &'a str,
    /// The mount path of the plugin that emitted the event, e.g. `secret/`.
    pub source_plugin_mount: &'a str,
    /// The API path the event concerns, e.g. `secret/data/app/db`.
    pub data_path: &'a str,
    /// The namespace path; empty for the root namespace.
    pub namespace: &'a str,
}

/// A parsed filter expression, ready to be evaluated against many events. Regular expressions are compiled once, by
/// [`Filter::parse`].
#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
}

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter expression at position {position}: {message}")]
pub struct FilterError {
    /// 1-based character (not byte) offset of the offending token; one past the last character for errors at the end.
    pub position: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl Filter {
    /// Parses a go-bexpr expression (see the module documentation for the accepted subset). An empty or
    /// whitespace-only expression is an error: callers treat an absent filter as "match everything" themselves.
    pub fn parse(expression: &str) -> Result<Filter, FilterError> {
        let length = expression.chars().count();
        if length > MAX_EXPRESSION_CHARS {
            return Err(error(
                MAX_EXPRESSION_CHARS + 1,
                format!("expression too long ({length} characters, maximum {MAX_EXPRESSION_CHARS})"),
            ));
        }
        if expression.trim().is_empty() {
            return Err(error(1, "empty filter expression"));
        }
        let mut parser = Parser { lexer: Lexer { chars: expression.chars().collect(), index: 0 }, peeked: None };
        let expr = parser.parse_or(0, None)?;
        let token = parser.next()?;
        match token.kind {
            TokenKind::End => Ok(Filter { expr }),
            TokenKind::RParen => Err(error(token.pos, "unexpected \")\" with no matching \"(\"")),
            _ => Err(error(
                token.pos,
                format!("expected \"and\", \"or\" or end of expression, found {}", describe(&token.kind)),
            )),
        }
    }

    /// Whether an event with these fields passes the filter.
    pub fn matches(&self, fields: &FilterFields<'_>) -> bool {
        self.expr.eval(fields)
    }
}

/// Writes the filter back as an expression in canonical form (selectors bare, values double-quoted) that parses to
/// an equivalent filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.write(f, Precedence::Or)
    }
}

fn error(position: usize, message: impl Into<String>) -> FilterError {
    FilterError { position, message: message.into() }
}

// ---------------------------------------------------------------------------------------------------------------
// AST and evaluation

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    EventType,
    Operation,
    SourcePluginMount,
    DataPath,
    Namespace,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        match name {
            "event_type" => Some(Field::EventType),
            "operation" => Some(Field::Operation),
            "source_plugin_mount" => Some(Field::SourcePluginMount),
            "data_path" => Some(Field::DataPath),
            "namespace" => Some(Field::Namespace),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::EventType => "event_type",
            Field::Operation => "operation",
            Field::SourcePluginMount => "source_plugin_mount",
            Field::DataPath => "data_path",
            Field::Namespace => "namespace",
        }
    }

    fn get<'a>(self, fields: &FilterFields<'a>) -> &'a str {
        match self {
            Field::EventType => fields.event_type,
            Field::Operation => fields.operation,
            Field::SourcePluginMount => fields.source_plugin_mount,
            Field::DataPath => fields.data_path,
            Field::Namespace => fields.namespace,
        }
    }
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    /// `value_first` records whether it was written `v in sel` (true) or `sel contains v`, for display only.
    Substring {
        value: String,
        value_first: bool,
    },
    Regex(Regex),
    Empty,
}

#[derive(Debug, Clone)]
struct Match {
    field: Field,
    test: Test,
    negated: bool,
}

impl Match {
    fn eval(&self, fields: &FilterFields<'_>) -> bool {
        let actual = self.field.get(fields);
        let result = match &self.test {
            Test::Equal(value) => actual == value,
            Test::Substring { value, .. } => actual.contains(value.as_str()),
            Test::Regex(regex) => regex.is_match(actual),
            Test::Empty => actual.is_empty(),
        };
        result != self.negated
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Precedence {
    Or,
    And,
    Unary,
}

impl Expr {
    fn eval(&self, fields: &FilterFields<'_>) -> bool {
        match self {
            Expr::Or(items) => items.iter().any(|item| item.eval(fields)),
            Expr::And(items) => items.iter().all(|item| item.eval(fields)),
            Expr::Not(inner) => !inner.eval(fields),
            Expr::Match(m) => m.eval(fields),
        }
    }

    /// `not not x` is `x`, as in go-bexpr.
    fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    fn precedence(&self) -> Precedence {
        match self {
            Expr::Or(_) => Precedence::Or,
            Expr::And(_) => Precedence::And,
            Expr::Not(_) | Expr::Match(_) => Precedence::Unary,
        }
    }

    /// Writes the expression, parenthesized if it binds less tightly than `min`. A nested `and` inside `and` (or `or`
    /// inside `or`) is parenthesized too, which keeps the tree shape on a round trip.
    fn write(&self, f: &mut fmt::Formatter<'_>, min: Precedence) -> fmt::Result {
        let parenthesize = self.precedence() < min;
        if parenthesize {
            f.write_char('(')?;
        }
        match self {
            Expr::Or(items) | Expr::And(items) => {
                let (separator, child_min) =
                    if matches!(self, Expr::Or(_)) { (" or ", Precedence::And) } else { (" and ", Precedence::Unary) };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(separator)?;
                    }
                    let nested_same = std::mem::discriminant(item) == std::mem::discriminant(self);
                    if nested_same {
                        f.write_char('(')?;
                        item.write(f, Precedence::Or)?;
                        f.write_char(')')?;
                    } else {
                        item.write(f, child_min)?;
                    }
                }
            }
            Expr::Not(inner) => {
                f.write_str("not ")?;
                inner.write(f, Precedence::Unary)?;
            }
            Expr::Match(m) => {
                let field = m.field.name();
                let not = if m.negated { "not " } else { "" };
                match &m.test {
                    Test::Equal(value) => {
                        write!(f, "{field} {} ", if m.negated { "!=" } else { "==" })?;
                        write_quoted(f, value)?;
                    }
                    Test::Substring { value, value_first: true } => {
                        write_quoted(f, value)?;
                        write!(f, " {not}in {field}")?;
                    }
                    Test::Substring { value, value_first: false } => {
                        write!(f, "{field} {not}contains ")?;
                        write_quoted(f, value)?;
                    }
                    Test::Regex(regex) => {
                        write!(f, "{field} {not}matches ")?;
                        write_quoted(f, regex.as_str())?;
                    }
                    Test::Empty => write!(f, "{field} is {not}empty")?,
                }
            }
        }
        if parenthesize {
            f.write_char(')')?;
        }
        Ok(())
    }
}

/// Writes `value` as a double-quoted string using only escapes this module's lexer accepts.
fn write_quoted(f: &mut impl fmt::Write, value: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c.is_control() && u32::from(c) < 0x80 => write!(f, "\\x{:02x}", u32::from(c))?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    /// A bare word: a keyword, a selector or an unquoted value.
    Word(String),
    /// A double-quoted or backquoted string, unescaped.
    Str(String),
    LParen,
    RParen,
    Eq,
    Ne,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// 1-based character position of the token's first character.
    pos: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '*')
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// Quotes `text` for an error message, shortening it if it is long.
fn quote_for_message(text: &str) -> String {
    if text.chars().count() > MAX_QUOTED_CHARS {
        let short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{short:?}…")
    } else {
        format!("{text:?}")
    }
}

/// How a token is named in "found ..." parts of error messages.
fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Word(word) if is_keyword(word) => format!("keyword {word:?}"),
        TokenKind::Word(word) => quote_for_message(word),
        TokenKind::Str(text) => format!("string {}", quote_for_message(text)),
        TokenKind::LParen => "\"(\"".to_string(),
        TokenKind::RParen => "\")\"".to_string(),
        TokenKind::Eq => "\"==\"".to_string(),
        TokenKind::Ne => "\"!=\"".to_string(),
        TokenKind::End => "end of expression".to_string(),
    }
}

struct Lexer {
    chars: Vec<char>,
    /// 0-based index of the next unread character.
    index: usize,
}

impl Lexer {
    fn peek_char(&self) -> Option<char> {
        self.chars.get(self.index).copied()
    }

    fn next_token(&mut self) -> Result<Token, FilterError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.index += 1;
        }
        let pos = self.index + 1;
        let Some(c) = self.peek_char() else {
            return Ok(Token { kind: TokenKind::End, pos });
        };
        self.index += 1;
        let kind = match c {
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            '=' | '!' => {
                if self.peek_char() == Some('=') {
                    self.index += 1;
                    if c == '=' {
                        TokenKind::Eq
                    } else {
                        TokenKind::Ne
                    }
                } else {
                    let meant = if c == '=' { "==" } else { "!=" };
                    return Err(error(pos, format!("unexpected character \"{c}\" (did you mean \"{meant}\"?)")));
                }
            }
            '"' => TokenKind::Str(self.double_quoted(pos)?),
            '`' => TokenKind::Str(self.raw_string(pos)?),
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some(next) = self.peek_char().filter(|&next| is_word_char(next)) {
                    word.push(next);
                    self.index += 1;
                }
                TokenKind::Word(word)
            }
            c => {
                return Err(error(
                    pos,
                    format!(
                        "unexpected character {:?}; expected a selector, value, operator or parenthesis",
                        c.to_string()
                    ),
                ))
            }
        };
        Ok(Token { kind, pos })
    }

    /// Reads a backquoted string whose opening quote, at `start`, has been consumed. No escapes.
    fn raw_string(&mut self, start: usize) -> Result<String, FilterError> {
        let mut text = String::new();
        loop {
            match self.peek_char() {
                None => {
                    return Err(error(start, "unterminated string: expected a closing \"`\", found end of expression"))
                }
                Some('`') => {
                    self.index += 1;
                    return Ok(text);
                }
                Some(c) => {
                    text.push(c);
                    self.index += 1;
                }
            }
        }
    }

    /// Reads a double-quoted string whose opening quote, at `start`, has been consumed, resolving Go escapes.
    fn double_quoted(&mut self, start: usize) -> Result<String, FilterError> {
        let unterminated = || error(start, "unterminated string: expected a closing '\"', found end of expression");
        let mut text = String::new();
        loop {
            let c = self.peek_char().ok_or_else(unterminated)?;
            self.index += 1;
            match c {
                '"' => return Ok(text),
                '\\' => {
                    let escape_pos = self.index; // 1-based position of the backslash
                    let e = self.peek_char().ok_or_else(unterminated)?;
                    self.index += 1;
                    let resolved = match e {
                        '"' => '"',
                        '\\' => '\\',
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'a' => '\u{07}',
                        'b' => '\u{08}',
                        'f' => '\u{0c}',
                        'v' => '\u{0b}',
                        'x' => self.numeric_escape(escape_pos, e, 2, 16)?,
                        'u' => self.numeric_escape(escape_pos, e, 4, 16)?,
                        'U' => self.numeric_escape(escape_pos, e, 8, 16)?,
                        '0'..='7' => {
                            self.index -= 1; // the first octal digit is part of the number
                            self.numeric_escape(escape_pos, e, 3, 8)?
                        }
                        other => {
                            let sequence = format!("\\{other}");
                            return Err(error(
                                escape_pos,
                                format!("unknown escape sequence {sequence:?} in string; expected one of {ESCAPES}"),
                            ));
                        }
                    };
                    text.push(resolved);
                }
                c => text.push(c),
            }
        }
    }

    /// Reads `digits` digits in `radix` after an escape introducer; `\x` and octal escapes must stay ASCII (Go would
    /// produce a raw byte, which is not valid text).
    fn numeric_escape(
        &mut self,
        escape_pos: usize,
        kind: char,
        digits: usize,
        radix: u32,
    ) -> Result<char, FilterError> {
        let mut value: u32 = 0;
        for _ in 0..digits {
            let digit = self.peek_char().and_then(|c| c.to_digit(radix));
            let Some(digit) = digit else {
                let what = if radix == 8 { "octal".to_string() } else { format!("\\{kind}") };
                let found = match self.peek_char() {
                    Some(c) => format!("{:?}", c.to_string()),
                    None => "end of expression".to_string(),
                };
                let base = if radix == 8 { "octal" } else { "hexadecimal" };
                return Err(error(
                    escape_pos,
                    format!("invalid {what} escape: expected {digits} {base} digits, found {found}"),
                ));
            };
            value = value.saturating_mul(radix).saturating_add(digit);
            self.index += 1;
        }
        let ascii_only = kind == 'x' || radix == 8;
        match char::from_u32(value) {
            Some(c) if !ascii_only || c.is_ascii() => Ok(c),
            Some(_) => {
                Err(error(escape_pos, format!("escape value {value:#x} is not ASCII; use \\u for other characters")))
            }
            None => Err(error(escape_pos, format!("escape value {value:#x} is not a valid Unicode character"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Parser

/// The first word or string of a match expression, before it is known whether it is a selector or a value.
struct Operand {
    text: String,
    quoted: bool,
    pos: usize,
}

struct Parser {
    lexer: Lexer,
    peeked: Option<Token>,
}

impl Parser {
    fn peek(&mut self) -> Result<&Token, FilterError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn next(&mut self) -> Result<Token, FilterError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    fn peek_is_word(&mut self, word: &str) -> Result<bool, FilterError> {
        Ok(matches!(&self.peek()?.kind, TokenKind::Word(w) if w == word))
    }

    /// `or_expr := and_expr ("or" and_expr)*`. `after` names the token before the expression, for error messages.
    fn parse_or(&mut self, depth: usize, after: Option<&'static str>) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_and(depth, after)?];
        while self.peek_is_word("or")? {
            self.next()?;
            items.push(self.parse_and(depth, Some("or"))?);
        }
        Ok(collapse(items, Expr::Or))
    }

    /// `and_expr := not_expr ("and" not_expr)*`.
    fn parse_and(&mut self, depth: usize, after: Option<&'static str>) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_not(depth, after)?];
        while self.peek_is_word("and")? {
            self.next()?;
            items.push(self.parse_not(depth, Some("and"))?);
        }
        Ok(collapse(items, Expr::And))
    }

    /// `not_expr := "not"* primary`, iterative so that a long run of `not` cannot exhaust the stack.
    fn parse_not(&mut self, depth: usize, after: Option<&'static str>) -> Result<Expr, FilterError> {
        let mut negated = false;
        let mut after = after;
        while self.peek_is_word("not")? {
            self.next()?;
            negated = !negated;
            after = Some("not");
        }
        let expr = self.parse_primary(depth, after)?;
        Ok(if negated { expr.negate() } else { expr })
    }

    /// `primary := "(" or_expr ")" | match`.
    fn parse_primary(&mut self, depth: usize, after: Option<&'static str>) -> Result<Expr, FilterError> {
        let token = self.next()?;
        match token.kind {
            TokenKind::LParen => {
                if depth >= MAX_NESTING_DEPTH {
                    return Err(error(
                        token.pos,
                        format!("expression nested too deeply (more than {MAX_NESTING_DEPTH} levels of parentheses)"),
                    ));
                }
                let inner = self.parse_or(depth + 1, Some("("))?;
                let close = self.next()?;
                if close.kind != TokenKind::RParen {
                    return Err(error(
                        close.pos,
                        format!(
                            "expected \")\" to close the \"(\" at position {}, found {}",
                            token.pos,
                            describe(&close.kind)
                        ),
                    ));
                }
                Ok(inner)
            }
            TokenKind::Word(text) if !is_keyword(&text) => {
                self.parse_match(Operand { text, quoted: false, pos: token.pos })
            }
            TokenKind::Str(text) => self.parse_match(Operand { text, quoted: true, pos: token.pos }),
            kind => {
                let after = after.map(|a| format!(" after \"{a}\"")).unwrap_or_default();
                Err(error(token.pos, format!("expected a selector, value or \"(\"{after}, found {}", describe(&kind))))
            }
        }
    }

    /// `match := selector ("==" | "!=" | ["not"] "contains" | ["not"] "matches") value
    ///          | selector "is" ["not"] "empty" | value ["not"] "in" selector`.
    fn parse_match(&mut self, first: Operand) -> Result<Expr, FilterError> {
        let op = self.next()?;
        let (field, test, negated) = match &op.kind {
            TokenKind::Eq | TokenKind::Ne => {
                let symbol = if op.kind == TokenKind::Eq { "==" } else { "!=" };
                let field = selector_from(&first, symbol)?;
                let value = self.expect_value(symbol)?;
                (field, Test::Equal(value.text), op.kind == TokenKind::Ne)
            }
            TokenKind::Word(word) => match word.as_str() {
                "in" => self.finish_in(&first, "in", false)?,
                "contains" => self.finish_contains(&first, "contains", false)?,
                "matches" => self.finish_matches(&first, "matches", false)?,
                "is" => {
                    let field = selector_from(&first, "is")?;
                    let next = self.next()?;
                    match &next.kind {
                        TokenKind::Word(w) if w == "empty" => (field, Test::Empty, false),
                        TokenKind::Word(w) if w == "not" => {
                            let last = self.next()?;
                            if !matches!(&last.kind, TokenKind::Word(w) if w == "empty") {
                                return Err(error(
                                    last.pos,
                                    format!("expected \"empty\" after \"is not\", found {}", describe(&last.kind)),
                                ));
                            }
                            (field, Test::Empty, true)
                        }
                        kind => {
                            return Err(error(
                                next.pos,
                                format!("expected \"empty\" or \"not empty\" after \"is\", found {}", describe(kind)),
                            ))
                        }
                    }
                }
                "not" => {
                    let next = self.next()?;
                    match &next.kind {
                        TokenKind::Word(w) if w == "in" => self.finish_in(&first, "not in", true)?,
                        TokenKind::Word(w) if w == "contains" => self.finish_contains(&first, "not contains", true)?,
                        TokenKind::Word(w) if w == "matches" => self.finish_matches(&first, "not matches", true)?,
                        kind => {
                            return Err(error(
                                next.pos,
                                format!(
                                    "expected \"in\", \"contains\" or \"matches\" after \"not\", found {}",
                                    describe(kind)
                                ),
                            ))
                        }
                    }
                }
                _ => return Err(missing_operator(&first, &op)),
            },
            _ => return Err(missing_operator(&first, &op)),
        };
        Ok(Expr::Match(Match { field, test, negated }))
    }

    fn finish_in(&mut self, value: &Operand, symbol: &str, negated: bool) -> Result<(Field, Test, bool), FilterError> {
        let token = self.next()?;
        let field = match &token.kind {
            TokenKind::Word(text) if !is_keyword(text) => {
                selector_from(&Operand { text: text.clone(), quoted: false, pos: token.pos }, symbol)?
            }
            TokenKind::Str(text) => {
                selector_from(&Operand { text: text.clone(), quoted: true, pos: token.pos }, symbol)?
            }
            kind => {
                return Err(error(
                    token.pos,
                    format!(
                        "expected a selector after \"{symbol}\" (known: {KNOWN_SELECTORS}), found {}",
                        describe(kind)
                    ),
                ))
            }
        };
        Ok((field, Test::Substring { value: value.text.clone(), value_first: true }, negated))
    }

    fn finish_contains(
        &mut self,
        first: &Operand,
        symbol: &str,
        negated: bool,
    ) -> Result<(Field, Test, bool), FilterError> {
        let field = selector_from(first, symbol)?;
        let value = self.expect_value(symbol)?;
        Ok((field, Test::Substring { value: value.text, value_first: false }, negated))
    }

    fn finish_matches(
        &mut self,
        first: &Operand,
        symbol: &str,
        negated: bool,
    ) -> Result<(Field, Test, bool), FilterError> {
        let field = selector_from(first, symbol)?;
        let value = self.expect_value(symbol)?;
        let regex = RegexBuilder::new(&value.text)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| error(value.pos, regex_error_message(&value.text, &e)))?;
        Ok((field, Test::Regex(regex), negated))
    }

    fn expect_value(&mut self, symbol: &str) -> Result<Operand, FilterError> {
        let token = self.next()?;
        match token.kind {
            TokenKind::Word(text) if !is_keyword(&text) => Ok(Operand { text, quoted: false, pos: token.pos }),
            TokenKind::Str(text) => Ok(Operand { text, quoted: true, pos: token.pos }),
            TokenKind::Word(word) => Err(error(
                token.pos,
                format!("expected a value after \"{symbol}\", found keyword {word:?} (quote it to use it as a value)"),
            )),
            kind => Err(error(token.pos, format!("expected a value after \"{symbol}\", found {}", describe(&kind)))),
        }
    }
}

/// One item stays itself; several become an `and`/`or` node.
fn collapse(mut items: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() > 1 {
        return make(items);
    }
    items.pop().unwrap_or_else(|| make(Vec::new()))
}

/// Resolves the operand before `symbol` as a selector: a bare known name or a double-quoted JSON pointer to one.
fn selector_from(operand: &Operand, symbol: &str) -> Result<Field, FilterError> {
    if operand.quoted {
        match operand.text.strip_prefix('/') {
            Some(name) => Field::from_name(name).ok_or_else(|| unknown_selector(operand)),
            None => Err(error(
                operand.pos,
                format!(
                    "expected a selector before \"{symbol}\" (known: {KNOWN_SELECTORS}), found string {}",
                    quote_for_message(&operand.text)
                ),
            )),
        }
    } else {
        Field::from_name(&operand.text).ok_or_else(|| unknown_selector(operand))
    }
}

fn unknown_selector(operand: &Operand) -> FilterError {
    error(operand.pos, format!("unknown selector {} (known: {KNOWN_SELECTORS})", quote_for_message(&operand.text)))
}

/// The error for `first` followed by something that is not an operator.
fn missing_operator(first: &Operand, found: &Token) -> FilterError {
    let found_text = describe(&found.kind);
    if first.quoted {
        if first.text.strip_prefix('/').and_then(Field::from_name).is_some() {
            return error(found.pos, format!("expected an operator ({OPERATORS}), found {found_text}"));
        }
        return error(
            found.pos,
            format!("expected \"in\" or \"not in\" after value {}, found {found_text}", quote_for_message(&first.text)),
        );
    }
    if Field::from_name(&first.text).is_none() {
        return unknown_selector(first);
    }
    error(found.pos, format!("expected an operator after {:?} ({OPERATORS}), found {found_text}", first.text))
}

/// A one-line description of a regular expression error (the `regex` crate's syntax errors span several lines).
fn regex_error_message(pattern: &str, err: &regex::Error) -> String {
    let reason = match err {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .map(str::to_string)
            .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" ")),
        regex::Error::CompiledTooBig(limit) => format!("compiled size exceeds {limit} bytes"),
        other => other.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    };
    format!("invalid regular expression {}: {reason}", quote_for_message(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV_WRITE: FilterFields<'static> = FilterFields {
        event_type: "kv-v2/data-write",
        operation: "data-write",
        source_plugin_mount: "secret/",
        data_path: "secret/data/app/db",
        namespace: "",
    };

    const KV_DELETE_NS: FilterFields<'static> = FilterFields {
        event_type: "kv-v1/delete",
        operation: "delete",
        source_plugin_mount: "kv/",
        data_path: "kv/team \"a\"\\x",
        namespace: "ns1/",
    };

    #[test]
    fn evaluates() {
        let cases: &[(&str, FilterFields<'static>, bool)] = &[
            // == and !=, with bare, double-quoted and raw values
            ("event_type == kv-v2/data-write", KV_WRITE, true),
            ("event_type == \"kv-v2/data-write\"", KV_WRITE, true),
            ("event_type == `kv-v2/data-write`", KV_WRITE, true),
            ("event_type==kv-v2/data-write", KV_WRITE, true),
            ("event_type == kv-v2/data-delete", KV_WRITE, false),
            ("event_type != kv-v2/data-delete", KV_WRITE, true),
            ("event_type != kv-v2/data-write", KV_WRITE, false),
            ("operation == data-write", KV_WRITE, true),
            ("source_plugin_mount == secret/", KV_WRITE, true),
            ("namespace == \"\"", KV_WRITE, true),
            ("namespace == ns1/", KV_DELETE_NS, true),
            ("\"/data_path\" == secret/data/app/db", KV_WRITE, true),
            // escapes
            ("data_path == \"kv/team \\\"a\\\"\\\\x\"", KV_DELETE_NS, true),
            ("data_path == `kv/team \"a\"\\x`", KV_DELETE_NS, true),
            ("data_path contains \"\\x61pp\"", KV_WRITE, true),
            ("data_path contains \"\\u0061pp\"", KV_WRITE, true),
            ("data_path contains \"\\141pp\"", KV_WRITE, true),
            ("data_path contains \"\\n\"", KV_WRITE, false),
            ("data_path contains \"\\t\"", KV_WRITE, false),
            // in / not in / contains / not contains
            ("data in data_path", KV_WRITE, true),
            ("\"app/db\" in data_path", KV_WRITE, true),
            ("missing in data_path", KV_WRITE, false),
            ("missing not in data_path", KV_WRITE, true),
            ("data not in data_path", KV_WRITE, false),
            ("data in \"/data_path\"", KV_WRITE, true),
            ("data_path contains app", KV_WRITE, true),
            ("data_path contains nope", KV_WRITE, false),
            ("data_path not contains nope", KV_WRITE, true),
            ("data_path not contains app", KV_WRITE, false),
            // matches / not matches
            ("data_path matches \"^secret/data/.*\"", KV_WRITE, true),
            ("data_path matches secret/.*/db", KV_WRITE, true),
            ("data_path matches `^kv/`", KV_WRITE, false),
            ("data_path not matches `^kv/`", KV_WRITE, true),
            ("data_path not matches `db$`", KV_WRITE, false),
            ("event_type matches `^kv-v[12]/`", KV_DELETE_NS, true),
            // is empty / is not empty
            ("namespace is empty", KV_WRITE, true),
            ("namespace is not empty", KV_WRITE, false),
            ("namespace is not empty", KV_DELETE_NS, true),
            ("operation is empty", FilterFields::default(), true),
            // not, and, or, precedence, parentheses
            ("not operation == delete", KV_WRITE, true),
            ("not not operation == delete", KV_WRITE, false),
            ("not not not operation == delete", KV_WRITE, true),
            ("not (operation == delete)", KV_DELETE_NS, false),
            ("operation == data-write and namespace is empty", KV_WRITE, true),
            ("operation == data-write and namespace is not empty", KV_WRITE, false),
            ("operation == delete or namespace is empty", KV_WRITE, true),
            ("operation == delete or namespace is not empty", KV_WRITE, false),
            // a or b and c == a or (b and c)
            ("operation == data-write or operation == x and namespace == y", KV_WRITE, true),
            ("(operation == data-write or operation == x) and namespace == y", KV_WRITE, false),
            // not binds tighter than and
            ("not operation == x and namespace == y", KV_WRITE, false),
            ("not (operation == x and namespace == y)", KV_WRITE, true),
            ("((event_type == kv-v2/data-write))", KV_WRITE, true),
            ("a in data_path and b in data_path or c in data_path", KV_WRITE, true),
            ("x in data_path or y in data_path or db in data_path", KV_WRITE, true),
            ("x in data_path or y in data_path or z in data_path", KV_WRITE, false),
            (" \t\n event_type == kv-v1/delete \n", KV_DELETE_NS, true),
            ("operation == \"and\"", FilterFields { operation: "and", ..KV_WRITE }, true),
            ("operation == \"é\"", FilterFields { operation: "é", ..KV_WRITE }, true),
        ];
        for (expression, fields, expected) in cases {
            let filter = Filter::parse(expression).unwrap_or_else(|e| panic!("{expression:?}: {e}"));
            assert_eq!(filter.matches(fields), *expected, "{expression:?} against {fields:?}");
            // Display writes an equivalent expression that displays the same way again.
            let shown = filter.to_string();
            let reparsed = Filter::parse(&shown).unwrap_or_else(|e| panic!("{shown:?} (from {expression:?}): {e}"));
            assert_eq!(reparsed.matches(fields), *expected, "{shown:?} (from {expression:?})");
            assert_eq!(reparsed.to_string(), shown, "from {expression:?}");
        }
    }

    #[test]
    fn rejects() {
        let deep = format!("{}event_type == x{}", "(".repeat(65), ")".repeat(65));
        let just_deep_enough = format!("{}event_type == x{}", "(".repeat(64), ")".repeat(64));
        assert!(Filter::parse(&just_deep_enough).is_ok());
        let long = format!("event_type == \"{}\"", "a".repeat(5000));
        let cases: Vec<(&str, usize, &str)> = vec![
            ("", 1, "empty filter expression"),
            ("  \t ", 1, "empty filter expression"),
            ("foo == bar", 1, "unknown selector \"foo\" (known: event_type, operation, source_plugin_mount"),
            ("data_pth == x", 1, "unknown selector \"data_pth\""),
            ("x in foo", 6, "unknown selector \"foo\""),
            ("\"/foo\" == x", 1, "unknown selector \"/foo\""),
            ("\"abc\" == x", 1, "expected a selector before \"==\""),
            ("event_type ==", 14, "expected a value after \"==\", found end of expression"),
            ("event_type !=  ", 16, "expected a value after \"!=\", found end of expression"),
            ("event_type == )", 15, "expected a value after \"==\", found \")\""),
            ("event_type == and", 15, "found keyword \"and\""),
            ("data_path contains", 19, "expected a value after \"contains\""),
            ("data_path not matches", 22, "expected a value after \"not matches\""),
            ("x in", 5, "expected a selector after \"in\""),
            ("x not in (", 10, "expected a selector after \"not in\""),
            ("event_type", 11, "expected an operator after \"event_type\""),
            ("event_type = x", 12, "unexpected character \"=\" (did you mean \"==\"?)"),
            ("event_type ! x", 12, "did you mean \"!=\""),
            ("event_type is", 14, "expected \"empty\" or \"not empty\" after \"is\""),
            ("event_type is not", 18, "expected \"empty\" after \"is not\""),
            ("event_type not == x", 16, "expected \"in\", \"contains\" or \"matches\" after \"not\""),
            ("\"abc\" contains x", 1, "expected a selector before \"contains\""),
            ("\"abc\"", 6, "expected \"in\" or \"not in\" after value \"abc\""),
            ("(event_type == x", 17, "expected \")\" to close the \"(\" at position 1, found end of expression"),
            ("(event_type == x or", 20, "expected a selector, value or \"(\" after \"or\""),
            ("event_type == x)", 16, "unexpected \")\""),
            ("()", 2, "expected a selector, value or \"(\" after \"(\", found \")\""),
            (")", 1, "expected a selector, value or \"(\", found \")\""),
            ("not", 4, "after \"not\", found end of expression"),
            ("event_type == x and", 20, "after \"and\", found end of expression"),
            ("and event_type == x", 1, "found keyword \"and\""),
            ("event_type == \"abc", 15, "unterminated string"),
            ("event_type == `abc", 15, "unterminated string"),
            ("event_type == \"abc\\", 15, "unterminated string"),
            ("event_type == \"a\\qb\"", 17, "unknown escape sequence \"\\\\q\""),
            ("event_type == \"\\x4\"", 16, "expected 2 hexadecimal digits"),
            ("event_type == \"\\xff\"", 16, "not ASCII"),
            ("event_type == \"\\ud800\"", 16, "not a valid Unicode character"),
            ("event_type == \"\\18\"", 16, "expected 3 octal digits"),
            ("data_path matches \"(abc\"", 19, "invalid regular expression \"(abc\": unclosed group"),
            ("data_path matches `a{99999}{99999}`", 19, "invalid regular expression"),
            ("é == x", 1, "unexpected character \"é\""),
            ("event_type == x y", 17, "expected \"and\", \"or\" or end of expression, found \"y\""),
            ("event_type == x and y", 21, "unknown selector \"y\""),
            ("event_type == x (", 17, "found \"(\""),
            ("event_type == x or or", 20, "after \"or\", found keyword \"or\""),
            ("event_type == a == b", 17, "found \"==\""),
            ("x in event_type in y", 17, "found keyword \"in\""),
            ("EVENT_TYPE == x", 1, "unknown selector \"EVENT_TYPE\""),
            ("event_type IS empty", 12, "expected an operator after \"event_type\""),
            (&deep, 65, "expression nested too deeply"),
            (&long, 4097, "expression too long (5016 characters, maximum 4096)"),
        ];
        for (expression, position, needle) in &cases {
            let err = match Filter::parse(expression) {
                Ok(filter) => panic!("{expression:?} parsed as {filter}"),
                Err(err) => err,
            };
            assert_eq!(err.position, *position, "{expression:?}: {err}");
            assert!(err.message.contains(needle), "{expression:?}: {err:?} lacks {needle:?}");
            assert!(!err.message.contains('\n'), "{expression:?}: multi-line message {:?}", err.message);
            assert!(err.to_string().starts_with(&format!("invalid filter expression at position {position}: ")));
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let err = Filter::parse("\"ééé\" in nope").err();
        assert_eq!(err.map(|e| (e.position, e.message.contains("\"nope\""))), Some((10, true)));
    }

    #[test]
    fn long_not_chains_do_not_recurse() {
        let odd = format!("{}event_type == x", "not ".repeat(1001));
        let filter = Filter::parse(&odd).unwrap_or_else(|e| panic!("{e}"));
        assert!(filter.matches(&KV_WRITE));
        assert_eq!(filter.to_string(), "not event_type == \"x\"");
        let chain = vec!["x in data_path"; 200].join(" or ");
        let filter = Filter::parse(&chain).unwrap_or_else(|e| panic!("{e}"));
        assert!(!filter.matches(&KV_WRITE));
    }

    /// A tiny deterministic xorshift generator, so the garbage test needs no extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() >> 16) as usize % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items.get(self.below(items.len())).copied().unwrap_or("")
        }
    }

    const SELECTORS: &[&str] = &["event_type", "operation", "source_plugin_mount", "data_path", "namespace"];
    const VALUES: &[&str] = &["x", "kv-v2/data-write", "\"a b\"", "`^s.*$`", "\"\\t\\u00e9\"", "secret/", "\"\""];
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "event_type", "data_path", "foo", " ", "  ", "==", "!=", "=", "!", "(", ")", "\"", "`", "\\", "\\x", "\\u12",
        "\\7", "and", "or", "not", "in", "contains", "matches", "is", "empty", "x", "é", "\u{0}", "\n", "*", "[", "]",
        "\"/data_path\"", "`^a(`", ".*", "{2}", "-", "😀",
    ];

    /// A random expression that is valid by construction (mutated afterwards by the caller).
    fn valid_expression(rng: &mut XorShift, depth: usize) -> String {
        match rng.below(if depth > 3 { 4 } else { 7 }) {
            0 => format!("{} == {}", rng.pick(SELECTORS), rng.pick(VALUES)),
            1 => format!("{} not in {}", rng.pick(VALUES), rng.pick(SELECTORS)),
            2 => format!("{} matches {}", rng.pick(SELECTORS), rng.pick(VALUES)),
            3 => format!("{} is not empty", rng.pick(SELECTORS)),
            4 => format!("not ({})", valid_expression(rng, depth + 1)),
            5 => format!("{} and {}", valid_expression(rng, depth + 1), valid_expression(rng, depth + 1)),
            _ => format!("({} or {})", valid_expression(rng, depth + 1), valid_expression(rng, depth + 1)),
        }
    }

    /// Feeds generated garbage and near-miss expressions: parsing must never panic, error positions must lie within
    /// the expression or just past its end, and whatever parses must display as something that parses again.
    #[test]
    fn survives_garbage() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (mut parsed, mut rejected) = (0, 0);
        for round in 0..6000 {
            let mut expression = String::new();
            if round % 2 == 0 {
                expression = valid_expression(&mut rng, 0);
                assert!(Filter::parse(&expression).is_ok(), "generated {expression:?} should parse");
            }
            // Insert pieces or arbitrary characters at random character positions.
            for _ in 0..rng.below(if round % 2 == 0 { 3 } else { 24 }) {
                let insert = if rng.below(4) == 0 {
                    char::from_u32((rng.next() >> 8) as u32 % 0x3000).unwrap_or('?').to_string()
                } else {
                    rng.pick(PIECES).to_string()
                };
                let chars: Vec<char> = expression.chars().collect();
                let at = rng.below(chars.len() + 1);
                expression = chars
                    .iter()
                    .take(at)
                    .chain(insert.chars().collect::<Vec<_>>().iter())
                    .chain(chars.iter().skip(at))
                    .collect();
            }
            // Sometimes cut a random character range out.
            if rng.below(3) == 0 {
                let chars: Vec<char> = expression.chars().collect();
                let from = rng.below(chars.len() + 1);
                let to = from + rng.below(8);
                expression = chars.iter().take(from).chain(chars.iter().skip(to)).collect();
            }
            match Filter::parse(&expression) {
                Ok(filter) => {
                    parsed += 1;
                    let _ = filter.matches(&KV_WRITE);
                    let shown = filter.to_string();
                    assert!(Filter::parse(&shown).is_ok(), "{expression:?} displayed as unparsable {shown:?}");
                }
                Err(err) => {
                    rejected += 1;
                    let len = expression.chars().count();
                    assert!(
                        (1..=len + 1).contains(&err.position),
                        "{expression:?}: position {} outside 1..={}: {}",
                        err.position,
                        len + 1,
                        err.message
                    );
                    assert!(!err.message.is_empty() && !err.message.contains('\n'), "{expression:?}: {err:?}");
                }
            }
        }
        assert!(parsed > 500 && rejected > 500, "parsed {parsed}, rejected {rejected}");
    }
}
