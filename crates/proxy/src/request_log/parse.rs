//! The parser of the Go `text/template` subset: splits the source into text
//! and actions (honouring `{{-`/`-}}` trim markers and `{{/* */}}`
//! comments), lexes each action and builds the node tree that `exec` walks.
//!
//! Supported: field chains on `.` and `$`, string/number/bool/nil literals,
//! parenthesised pipelines, `|` pipelines, the functions in [`Func`], and
//! `if`/`with` with `else` and `else if`/`else with`. Everything else Go
//! accepts (variables, `range`, `define`, `printf`, ...) is a parse error,
//! so a template kdp cannot render faithfully disables logging at startup
//! instead of producing wrong lines.

use super::TemplateError;

/// One node of the template tree.
#[derive(Clone, Debug)]
pub(super) enum Node {
    /// Literal text, copied to the output.
    Text(String),
    /// `{{pipeline}}`: the value is printed.
    Action(Pipeline),
    /// `{{if}}`: the branch taken depends on the pipeline's truth.
    If(Branch),
    /// `{{with}}`: like `if`, and the value becomes dot in the `then` branch.
    With(Branch),
}

/// The body of an `if` or a `with`.
#[derive(Clone, Debug)]
pub(super) struct Branch {
    pub(super) pipe: Pipeline,
    pub(super) then: Vec<Node>,
    pub(super) otherwise: Vec<Node>,
}

/// Commands separated by `|`; each result is the last argument of the next.
#[derive(Clone, Debug)]
pub(super) struct Pipeline {
    pub(super) cmds: Vec<Command>,
}

/// A command: an operand, optionally followed by arguments.
#[derive(Clone, Debug)]
pub(super) struct Command {
    pub(super) operands: Vec<Operand>,
}

/// Where a field chain starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Base {
    /// `.`: the current dot.
    Dot,
    /// `$`: the data the template was executed with.
    Root,
}

/// One word of a command.
#[derive(Clone, Debug)]
pub(super) enum Operand {
    /// `.`, `$`, `.A.B` or `$.A.B`.
    Field {
        base: Base,
        path: Vec<String>,
    },
    Func(Func),
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Nil,
    Sub(Pipeline),
}

/// The supported template functions (Go's builtins of the same name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Js,
    Html,
    UrlQuery,
    Print,
    Println,
    Index,
    Len,
    Not,
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug)]
enum Token {
    Field { base: Base, path: Vec<String> },
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
    LParen,
    RParen,
}

enum Item {
    Text(String),
    Action { tokens: Vec<Token>, line: usize },
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End(usize),
    Else(Vec<Token>, usize),
}

/// Characters Go's template lexer treats as trimmable space.
const SPACE: &[char] = &[' ', '\t', '\r', '\n'];

// === impl Func ===

impl Func {
    fn lookup(name: &str) -> Option<Self> {
        Some(match name {
            "js" => Self::Js,
            "html" => Self::Html,
            "urlquery" => Self::UrlQuery,
            "print" => Self::Print,
            "println" => Self::Println,
            "index" => Self::Index,
            "len" => Self::Len,
            "not" => Self::Not,
            "and" => Self::And,
            "or" => Self::Or,
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "lt" => Self::Lt,
            "le" => Self::Le,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            _ => return None,
        })
    }

    /// The name used in templates and error messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Js => "js",
            Self::Html => "html",
            Self::UrlQuery => "urlquery",
            Self::Print => "print",
            Self::Println => "println",
            Self::Index => "index",
            Self::Len => "len",
            Self::Not => "not",
            Self::And => "and",
            Self::Or => "or",
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Lt => "lt",
            Self::Le => "le",
            Self::Gt => "gt",
            Self::Ge => "ge",
        }
    }
}

/// Parses a whole template into its top-level nodes.
pub(super) fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
    let mut items = split(src)?.into_iter();
    let (nodes, end) = parse_list(&mut items)?;
    match end {
        Stop::Eof => Ok(nodes),
        Stop::End(line) => Err(TemplateError::new(line, "unexpected {{end}}")),
        Stop::Else(_, line) => Err(TemplateError::new(line, "unexpected {{else}}")),
    }
}

fn parse_list(items: &mut std::vec::IntoIter<Item>) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(item) = items.next() {
        let (tokens, line) = match item {
            Item::Text(text) => {
                nodes.push(Node::Text(text));
                continue;
            }
            Item::Action { tokens, line } => (tokens, line),
        };
        let keyword = match tokens.first() {
            Some(Token::Ident(word)) => word.as_str(),
            _ => "",
        };
        match keyword {
            "end" => {
                if tokens.len() > 1 {
                    return Err(TemplateError::new(line, "unexpected token in end"));
                }
                return Ok((nodes, Stop::End(line)));
            }
            "else" => return Ok((nodes, Stop::Else(tokens[1..].to_vec(), line))),
            "if" | "with" => nodes.push(parse_branch(items, &tokens, line)?),
            "range" | "define" | "template" | "block" | "break" | "continue" => {
                return Err(TemplateError::new(
                    line,
                    format!("{{{{{keyword}}}}} is not supported"),
                ));
            }
            _ => nodes.push(Node::Action(pipeline_of(&tokens, line, "command")?)),
        }
    }
    Ok((nodes, Stop::Eof))
}

/// Parses `if`/`with` whose action tokens (keyword first) are `tokens`,
/// consuming items up to and including the matching `{{end}}`.
fn parse_branch(
    items: &mut std::vec::IntoIter<Item>,
    tokens: &[Token],
    line: usize,
) -> Result<Node, TemplateError> {
    let Some(Token::Ident(keyword)) = tokens.first() else {
        return Err(TemplateError::new(line, "expected if or with"));
    };
    let pipe = pipeline_of(&tokens[1..], line, keyword)?;
    let (then, end) = parse_list(items)?;
    let otherwise = match end {
        Stop::Eof => return Err(TemplateError::new(line, "unexpected EOF")),
        Stop::End(_) => Vec::new(),
        Stop::Else(rest, _) if rest.is_empty() => match parse_list(items)? {
            (otherwise, Stop::End(_)) => otherwise,
            (_, Stop::Else(..)) => {
                return Err(TemplateError::new(line, "expected end; found {{else}}"));
            }
            (_, Stop::Eof) => return Err(TemplateError::new(line, "unexpected EOF")),
        },
        // `{{else if x}}...{{end}}` is a nested branch sharing this `end`.
        Stop::Else(rest, _) => match rest.first() {
            Some(Token::Ident(word)) if word == "if" || word == "with" => {
                vec![parse_branch(items, &rest, line)?]
            }
            _ => return Err(TemplateError::new(line, "unexpected token in else")),
        },
    };
    let branch = Branch {
        pipe,
        then,
        otherwise,
    };
    Ok(if keyword == "if" {
        Node::If(branch)
    } else {
        Node::With(branch)
    })
}

/// Parses a whole action's tokens as one pipeline; `context` names it in
/// the "missing value" error, as Go does.
fn pipeline_of(tokens: &[Token], line: usize, context: &str) -> Result<Pipeline, TemplateError> {
    let mut parser = Parser {
        tokens,
        pos: 0,
        line,
    };
    let pipe = parser.pipeline(context)?;
    match parser.tokens.get(parser.pos) {
        None => Ok(pipe),
        Some(_) => Err(TemplateError::new(line, "unexpected right paren")),
    }
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> TemplateError {
        TemplateError::new(self.line, message)
    }

    /// Parses commands up to the end of the tokens or a `)`.
    fn pipeline(&mut self, context: &str) -> Result<Pipeline, TemplateError> {
        let mut cmds = Vec::new();
        loop {
            let cmd = self.command()?;
            if cmd.operands.is_empty() {
                return Err(if cmds.is_empty() {
                    self.err(format!("missing value for {context}"))
                } else {
                    self.err("missing command after |")
                });
            }
            if let Some(first) = cmd.operands.first() {
                let literal = matches!(
                    first,
                    Operand::Bool(_)
                        | Operand::Int(_)
                        | Operand::Float(_)
                        | Operand::Str(_)
                        | Operand::Nil
                        | Operand::Field {
                            base: Base::Dot,
                            ..
                        }
                ) && !matches!(first, Operand::Field { path, .. } if !path.is_empty());
                if !cmds.is_empty() && literal {
                    let stage = cmds.len() + 1;
                    return Err(
                        self.err(format!("non executable command in pipeline stage {stage}"))
                    );
                }
                if matches!(first, Operand::Nil) && cmd.operands.len() == 1 {
                    return Err(self.err("nil is not a command"));
                }
            }
            cmds.push(cmd);
            match self.tokens.get(self.pos) {
                Some(Token::Pipe) => self.pos += 1,
                _ => return Ok(Pipeline { cmds }),
            }
        }
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let mut operands = Vec::new();
        while let Some(token) = self.tokens.get(self.pos) {
            self.pos += 1;
            let operand = match token {
                Token::Pipe | Token::RParen => {
                    self.pos -= 1;
                    break;
                }
                Token::Field { base, path } => Operand::Field {
                    base: *base,
                    path: path.clone(),
                },
                Token::Str(s) => Operand::Str(s.clone()),
                Token::Int(n) => Operand::Int(*n),
                Token::Float(f) => Operand::Float(*f),
                Token::LParen => {
                    let pipe = self.pipeline("parenthesized pipeline")?;
                    match self.tokens.get(self.pos) {
                        Some(Token::RParen) => self.pos += 1,
                        _ => return Err(self.err("unclosed left paren")),
                    }
                    Operand::Sub(pipe)
                }
                Token::Ident(name) => match name.as_str() {
                    "true" => Operand::Bool(true),
                    "false" => Operand::Bool(false),
                    "nil" => Operand::Nil,
                    "printf" | "slice" | "call" | "urlescape" => {
                        return Err(self.err(format!("function {name:?} is not supported")));
                    }
                    other => match Func::lookup(other) {
                        Some(func) => Operand::Func(func),
                        None => return Err(self.err(format!("function {other:?} not defined"))),
                    },
                },
            };
            operands.push(operand);
        }
        Ok(Command { operands })
    }
}

/// Splits the source into text and lexed actions, applying trim markers and
/// dropping comments.
fn split(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    loop {
        let line = src[..src.len() - rest.len()].matches('\n').count() + 1;
        let Some(open) = rest.find("{{") else {
            push_text(&mut items, rest, trim_next, false);
            return Ok(items);
        };
        let after_open = &rest[open + 2..];
        // `{{- ` needs the space: `{{-3}}` is the number -3.
        let left_trim = after_open.starts_with('-') && after_open[1..].starts_with(SPACE);
        push_text(&mut items, &rest[..open], trim_next, left_trim);
        let body = if left_trim {
            &after_open[2..]
        } else {
            after_open
        };
        let action_line = line + rest[..open].matches('\n').count();
        let (consumed, right_trim) = if let Some(comment) = body.strip_prefix("/*") {
            let Some(close) = comment.find("*/") else {
                return Err(TemplateError::new(action_line, "unclosed comment"));
            };
            let tail = &comment[close + 2..];
            let (len, trim) = if tail.starts_with("}}") {
                (2, false)
            } else if tail.starts_with(" -}}") {
                (4, true)
            } else {
                return Err(TemplateError::new(
                    action_line,
                    "comment ends before closing delimiter",
                ));
            };
            (2 + close + 2 + len, trim)
        } else {
            let (tokens, consumed, trim) = lex_action(body, action_line)?;
            items.push(Item::Action {
                tokens,
                line: action_line,
            });
            (consumed, trim)
        };
        rest = &body[consumed..];
        trim_next = right_trim;
    }
}

fn push_text(items: &mut Vec<Item>, text: &str, trim_start: bool, trim_end: bool) {
    let text = if trim_start {
        text.trim_start_matches(SPACE)
    } else {
        text
    };
    let text = if trim_end {
        text.trim_end_matches(SPACE)
    } else {
        text
    };
    if !text.is_empty() {
        items.push(Item::Text(text.to_owned()));
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Lexes one action body (after `{{` or `{{- `). Returns the tokens, the
/// bytes consumed including the closing delimiter, and whether it closed
/// with a right trim marker.
fn lex_action(body: &str, line: usize) -> Result<(Vec<Token>, usize, bool), TemplateError> {
    let err = |message: &str| TemplateError::new(line, message);
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &body[pos..];
        let Some(c) = rest.chars().next() else {
            return Err(err("unclosed action"));
        };
        if rest.starts_with("}}") {
            return Ok((tokens, pos + 2, false));
        }
        if SPACE.contains(&c) {
            if rest[1..].starts_with("-}}") {
                return Ok((tokens, pos + 4, true));
            }
            pos += 1;
            continue;
        }
        let (token, len) = match c {
            '|' => (Token::Pipe, 1),
            '(' => (Token::LParen, 1),
            ')' => {
                if rest[1..].starts_with('.') {
                    return Err(err(
                        "field access on a parenthesized pipeline is not supported",
                    ));
                }
                (Token::RParen, 1)
            }
            '"' | '`' => lex_string(rest).ok_or_else(|| err("unterminated quoted string"))?,
            '.' if !rest[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let (path, len) = lex_fields(rest);
                (
                    Token::Field {
                        base: Base::Dot,
                        path,
                    },
                    len,
                )
            }
            '$' => {
                if rest[1..].starts_with(is_ident_char) {
                    return Err(err("template variables are not supported"));
                }
                let (path, len) = lex_fields(&rest[1..]);
                (
                    Token::Field {
                        base: Base::Root,
                        path,
                    },
                    len + 1,
                )
            }
            c if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => lex_number(rest, line)?,
            c if is_ident_start(c) => {
                let len = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
                if rest[len..].starts_with('.') {
                    return Err(err("field access on an identifier is not supported"));
                }
                (Token::Ident(rest[..len].to_owned()), len)
            }
            ':' | '=' => return Err(err("template variables are not supported")),
            '\'' => return Err(err("character constants are not supported")),
            other => {
                return Err(TemplateError::new(
                    line,
                    format!("unexpected {other:?} in command"),
                ));
            }
        };
        tokens.push(token);
        pos += len;
    }
}

/// Lexes `.A.B.C` (or a bare `.`) at the start of `s`.
fn lex_fields(s: &str) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    let mut pos = 0;
    while s[pos..].starts_with('.') {
        let name = &s[pos + 1..];
        let len = name.find(|c: char| !is_ident_char(c)).unwrap_or(name.len());
        if len == 0 {
            // A bare `.` ends the chain only at its start; `.A.` is Go's
            // "unexpected . after term" and surfaces as an unknown field.
            if path.is_empty() {
                pos += 1;
            }
            break;
        }
        path.push(name[..len].to_owned());
        pos += 1 + len;
    }
    (path, pos)
}

fn lex_number(s: &str, line: usize) -> Result<(Token, usize), TemplateError> {
    let mut len = 0;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        let sign_ok = matches!(c, '+' | '-') && (i == 0 || matches!(prev, 'e' | 'E' | 'p' | 'P'));
        if !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || sign_ok) {
            break;
        }
        len = i + c.len_utf8();
        prev = c;
    }
    let text: String = s[..len].chars().filter(|&c| c != '_').collect();
    let bad = || TemplateError::new(line, format!("bad number syntax: {:?}", &s[..len]));
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let token = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        let n = i64::from_str_radix(hex, 16).map_err(|_| bad())?;
        Token::Int(if negative { -n } else { n })
    } else if digits.contains(['.', 'e', 'E']) {
        let f: f64 = digits.parse().map_err(|_| bad())?;
        Token::Float(if negative { -f } else { f })
    } else {
        let n: i64 = text.parse().map_err(|_| bad())?;
        Token::Int(n)
    };
    Ok((token, len))
}

/// Lexes a Go interpreted (`"..."`) or raw (`` `...` ``) string literal.
fn lex_string(s: &str) -> Option<(Token, usize)> {
    if let Some(raw) = s.strip_prefix('`') {
        let close = raw.find('`')?;
        return Some((Token::Str(raw[..close].to_owned()), close + 2));
    }
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Token::Str(out), i + 1)),
            '\n' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                let simple = match e {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' | '"' | '\'' => Some(e),
                    _ => None,
                };
                if let Some(c) = simple {
                    out.push(c);
                    continue;
                }
                let (radix, len) = match e {
                    'x' => (16, 2),
                    'u' => (16, 4),
                    'U' => (16, 8),
                    '0'..='7' => (8, 2),
                    _ => return None,
                };
                let mut code = if radix == 8 { e.to_digit(8)? } else { 0 };
                for _ in 0..len {
                    let (_, d) = chars.next()?;
                    code = code * radix + d.to_digit(radix)?;
                }
                // `\xHH` and octal escapes above 0x7F are raw bytes in Go,
                // which a Rust string cannot hold.
                if matches!(e, 'x' | '0'..='7') && code > 0x7f {
                    return None;
                }
                out.push(char::from_u32(code)?);
            }
            c => out.push(c),
        }
    }
    None
}
