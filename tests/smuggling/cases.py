r"""A corpus of request-smuggling attempts, as raw bytes sent on one client connection.

Each case lists what must happen to each request the client sent, in order:
    REFUSE            answered with a refusal (4xx, 501 or 505) and the connection closed; nothing of it,
                      and nothing after it, reaches a backend
    fwd(m, t, body)   forwarded as exactly one clean request: the backend sees method m, target t and the
                      body bytes body, in a message h11 parses with nothing left over
    either(m, t, b)   either of the two (the RFC leaves the choice to the server)
Cases marked REFUSE are those RFC 9112 or issue 2 says must be refused (two framings, duplicate or
malformed Content-Length, Transfer-Encoding other than a final chunked, bad chunk framing, obs-fold,
bare CR/LF, control bytes, invalid request line, missing or duplicate Host).
"""

from dataclasses import dataclass

REFUSE = ("refuse",)


def fwd(method, target, body=b""):
    return ("forward", method, target, body)


def either(method, target, body=b""):
    return ("either", method, target, body)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: tuple


def post(headers, body=b"", target=b"/echo"):
    """A POST with the given raw header lines (Host included) and raw body bytes."""
    return b"POST " + target + b" HTTP/1.1\r\nHost: app.test\r\n" + headers + b"\r\n" + body


CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
HIDDEN = b"GET /admin HTTP/1.1\r\nHost: admin.internal\r\n\r\n"

CASES = [
    # --- two framings: CL.TE and TE.CL (RFC 9112 section 6.3, item 3) ------------------------------
    Case("cl_te", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"), (REFUSE,)),
    Case(
        "te_cl",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"),
        (REFUSE,),
    ),
    Case(
        "cl_te_zero", post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO), (REFUSE,)
    ),
    # --- Transfer-Encoding obfuscations (section 6.1: chunked must be the final coding, once) ------------
    Case(
        "te_chunked_then_x",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", CHUNKED_HELLO),
        (REFUSE,),
    ),
    Case("te_x_alone", post(b"Transfer-Encoding: x\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_xchunked", post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_chunkedx", post(b"Transfer-Encoding: chunkedx\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_chunked_identity", post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_chunked_twice_list", post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case(
        "te_chunked_twice_fields",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO),
        (REFUSE,),
    ),
    Case("te_gzip_chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case(
        "te_identity_chunked",
        post(b"Transfer-Encoding: identity, chunked\r\n", CHUNKED_HELLO),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case("te_space_before_colon", post(b"Transfer-Encoding : chunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_tab_before_colon", post(b"Transfer-Encoding\t: chunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case(
        "te_leading_space_value",
        post(b"Transfer-Encoding:   chunked\r\n", CHUNKED_HELLO),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "te_leading_tab_value",
        post(b"Transfer-Encoding:\tchunked\r\n", CHUNKED_HELLO),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "te_trailing_space_value",
        post(b"Transfer-Encoding: chunked \r\n", CHUNKED_HELLO),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "te_uppercase",
        post(b"Transfer-Encoding: CHUNKED\r\n", CHUNKED_HELLO),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case("te_vertical_tab", post(b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_form_feed", post(b"Transfer-Encoding: chunked\x0c\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case("te_obs_fold", post(b"Transfer-Encoding: identity\r\n chunked\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case(
        "te_obs_fold_tab", post(b"X-Padding: a\r\n\tTransfer-Encoding: chunked\r\n", CHUNKED_HELLO), (REFUSE,)
    ),
    Case(
        "te_name_leading_space",
        post(b"Content-Length: 5\r\n Transfer-Encoding: chunked\r\n", b"hello"),
        (REFUSE,),
    ),
    Case("te_quoted", post(b'Transfer-Encoding: "chunked"\r\n', CHUNKED_HELLO), (REFUSE,)),
    Case("te_nul_suffix", post(b"Transfer-Encoding: chunked\x00\r\n", CHUNKED_HELLO), (REFUSE,)),
    Case(
        "te_http10",
        b"POST /echo HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_HELLO,
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "te_underscore_name",
        post(b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", b"hello"),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    # --- Content-Length tricks (section 6.3, item 5; RFC 9110 section 8.6) --------------------------------
    Case("cl_duplicate_same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), (REFUSE,)),
    Case(
        "cl_duplicate_different",
        post(b"Content-Length: 5\r\nContent-Length: 11\r\n", b"hello world"),
        (REFUSE,),
    ),
    Case("cl_list", post(b"Content-Length: 5, 5\r\n", b"hello"), (REFUSE,)),
    Case("cl_list_different", post(b"Content-Length: 5, 11\r\n", b"hello world"), (REFUSE,)),
    Case("cl_plus_sign", post(b"Content-Length: +5\r\n", b"hello"), (REFUSE,)),
    Case("cl_minus_sign", post(b"Content-Length: -5\r\n", b"hello"), (REFUSE,)),
    Case("cl_hex", post(b"Content-Length: 0x5\r\n", b"hello"), (REFUSE,)),
    Case("cl_trailing_comma", post(b"Content-Length: 5,\r\n", b"hello"), (REFUSE,)),
    Case("cl_inner_space", post(b"Content-Length: 1 1\r\n", b"hello world"), (REFUSE,)),
    Case("cl_empty", post(b"Content-Length: \r\n", b""), (REFUSE,)),
    Case("cl_overflow", post(b"Content-Length: 184467440737095516160\r\n", b"hello"), (REFUSE,)),
    Case("cl_int64_wrap", post(b"Content-Length: 18446744073709551621\r\n", b"hello"), (REFUSE,)),
    Case("cl_decimal_point", post(b"Content-Length: 5.0\r\n", b"hello"), (REFUSE,)),
    Case(
        "cl_leading_zeros",
        post(b"Content-Length: 0005\r\n", b"hello"),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case("cl_space_before_colon", post(b"Content-Length : 5\r\n", b"hello"), (REFUSE,)),
    Case("cl_obs_fold", post(b"Content-Length: 5\r\n 0\r\n", b"hello"), (REFUSE,)),
    # --- chunk-size and chunk framing tricks (section 7.1) -------------------------------------------
    Case("chunk_0x_prefix", post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"), (REFUSE,)),
    Case(
        "chunk_overflow",
        post(b"Transfer-Encoding: chunked\r\n", b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
        (REFUSE,),
    ),
    Case(
        "chunk_overflow_wrap_to_small",
        post(b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffff5\r\nhello\r\n0\r\n\r\n"),
        (REFUSE,),
    ),
    Case("chunk_negative", post(b"Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"), (REFUSE,)),
    Case("chunk_plus", post(b"Transfer-Encoding: chunked\r\n", b"+5\r\nhello\r\n0\r\n\r\n"), (REFUSE,)),
    Case("chunk_empty_size", post(b"Transfer-Encoding: chunked\r\n", b"\r\nhello\r\n0\r\n\r\n"), (REFUSE,)),
    Case("chunk_not_hex", post(b"Transfer-Encoding: chunked\r\n", b"g\r\nhello\r\n0\r\n\r\n"), (REFUSE,)),
    Case(
        "chunk_ext_bare_lf", post(b"Transfer-Encoding: chunked\r\n", b"5;ext\nhello\r\n0\r\n\r\n"), (REFUSE,)
    ),
    Case(
        "chunk_ext_bare_cr",
        post(b"Transfer-Encoding: chunked\r\n", b"5;e\rxt\r\nhello\r\n0\r\n\r\n"),
        (REFUSE,),
    ),
    Case("chunk_size_bare_lf", post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n"), (REFUSE,)),
    Case("chunk_data_bare_lf", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\n0\r\n\r\n"), (REFUSE,)),
    Case(
        "chunk_data_too_long", post(b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"), (REFUSE,)
    ),
    Case("chunk_last_bare_lf", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\n\n"), (REFUSE,)),
    Case(
        "chunk_trailer_bare_lf",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n"),
        (REFUSE,),
    ),
    Case(
        "chunk_trailer_obs_fold",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
        (REFUSE,),
    ),
    Case(
        "chunk_leading_zeros",
        post(b"Transfer-Encoding: chunked\r\n", b"0005\r\nhello\r\n0000\r\n\r\n"),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "chunk_uppercase_hex",
        post(b"Transfer-Encoding: chunked\r\n", b"A\r\n0123456789\r\n0\r\n\r\n"),
        (fwd(b"POST", b"/echo", b"0123456789"),),
    ),
    Case(
        "chunk_extension",
        post(b"Transfer-Encoding: chunked\r\n", b"5;name=value\r\nhello\r\n0;last\r\n\r\n"),
        (fwd(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "chunk_extension_quoted",
        post(b"Transfer-Encoding: chunked\r\n", b'5;a="x;y"\r\nhello\r\n0\r\n\r\n'),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "chunk_space_after_size",
        post(b"Transfer-Encoding: chunked\r\n", b"5 \r\nhello\r\n0\r\n\r\n"),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "chunk_trailer_content_length",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
        (either(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "chunk_ext_bws",
        post(b"Transfer-Encoding: chunked\r\n", b"5 ;a = b\r\nhello\r\n0\t;last\r\n\r\n"),
        (fwd(b"POST", b"/echo", b"hello"),),
    ),
    Case(
        "chunk_trailer_host_and_te",
        post(b"Transfer-Encoding: chunked\r\n",
             b"5\r\nhello\r\n0\r\nHost: admin.internal\r\nTransfer-Encoding: chunked\r\nX-T: 1\r\n\r\n"),
        (fwd(b"POST", b"/echo", b"hello"),),
    ),
    # --- Upgrade: only WebSocket is tunnelled; h2c is served as plain HTTP/1.1 (h2c smuggling) ---------
    Case(
        "upgrade_h2c",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /second HTTP/1.1\r\nHost: app.test\r\n\r\n",
        (fwd(b"GET", b"/"), fwd(b"GET", b"/second")),
    ),
    # --- line endings and control bytes in the head (section 2.2, 5; RFC 9110 section 5.5) -----------
    Case("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: app.test\n\n", (REFUSE,)),
    Case("bare_lf_after_request_line", b"GET / HTTP/1.1\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("bare_lf_between_fields", b"GET / HTTP/1.1\r\nHost: app.test\nX-A: 1\r\n\r\n", (REFUSE,)),
    Case("bare_lf_hides_cl", post(b"X-A: 1\nContent-Length: 5\r\n", b"hello"), (REFUSE,)),
    Case("bare_cr_in_field_line", b"GET / HTTP/1.1\r\nHost: app.test\rX-A: 1\r\n\r\n", (REFUSE,)),
    Case(
        "bare_cr_hides_te",
        post(b"X-A: 1\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"hello"),
        (REFUSE,),
    ),
    Case("bare_cr_end_of_head", b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\r\n", (REFUSE,)),
    Case("nul_in_value", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\x00b\r\n\r\n", (REFUSE,)),
    Case("nul_in_name", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-\x00A: b\r\n\r\n", (REFUSE,)),
    Case("ctl_in_name", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-\x01A: b\r\n\r\n", (REFUSE,)),
    Case("space_in_name", b"GET / HTTP/1.1\r\nHost: app.test\r\nX A: b\r\n\r\n", (REFUSE,)),
    Case("empty_name", b"GET / HTTP/1.1\r\nHost: app.test\r\n: b\r\n\r\n", (REFUSE,)),
    Case("no_colon", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A\r\n\r\n", (REFUSE,)),
    Case("obs_fold_first_field", b"GET / HTTP/1.1\r\n Host: app.test\r\n\r\n", (REFUSE,)),
    Case(
        "high_bytes_in_value",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: caf\xc3\xa9\r\n\r\n",
        (either(b"GET", b"/"),),
    ),
    # --- request line (section 3) ------------------------------------------------------------------------
    Case("double_space", b"GET  / HTTP/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("tab_separator", b"GET\t/ HTTP/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("lowercase_version", b"GET / http/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("version_2", b"GET / HTTP/2.0\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("version_garbage", b"GET / HTTP/1.1x\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("nul_in_target", b"GET /a\x00b HTTP/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("ctl_in_target", b"GET /a\x7fb HTTP/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("space_in_target", b"GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("bad_method_char", b"G(T / HTTP/1.1\r\nHost: app.test\r\n\r\n", (REFUSE,)),
    Case("lowercase_method", b"get / HTTP/1.1\r\nHost: app.test\r\n\r\n", (either(b"get", b"/"),)),
    Case("missing_host", b"GET / HTTP/1.1\r\n\r\n", (REFUSE,)),
    Case("duplicate_host", b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n\r\n", (REFUSE,)),
    Case("host_with_space", b"GET / HTTP/1.1\r\nHost: app.test evil.test\r\n\r\n", (REFUSE,)),
    Case(
        "absolute_form_conflicting_host",
        b"GET http://app.test/echo-head HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        (fwd(b"GET", b"/echo-head"),),
    ),
    Case(
        "absolute_form_no_path",
        b"GET http://app.test HTTP/1.1\r\nHost: app.test\r\n\r\n",
        (fwd(b"GET", b"/"),),
    ),
    Case(
        "absolute_form_userinfo",
        b"GET http://user@app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
        (either(b"GET", b"/"),),
    ),
    # --- hidden and pipelined requests ------------------------------------------------------------------
    Case(
        "get_with_body_hiding_request",
        b"GET /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n%s" % (len(HIDDEN), HIDDEN),
        (fwd(b"GET", b"/echo", HIDDEN),),
    ),
    Case(
        "chunked_body_hiding_request",
        post(b"Transfer-Encoding: chunked\r\n", b"1e\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n"),
        (fwd(b"POST", b"/echo", b"GET /admin HTTP/1.1\r\nHost: a\r\n"),),
    ),
    Case(
        "pipelined_after_chunked",
        post(
            b"Transfer-Encoding: chunked\r\n",
            CHUNKED_HELLO + b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n",
        ),
        (fwd(b"POST", b"/echo", b"hello"), fwd(b"GET", b"/second")),
    ),
    Case(
        "pipelined_after_cl_zero",
        post(b"Content-Length: 0\r\n", b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        (fwd(b"POST", b"/echo"), fwd(b"GET", b"/second")),
    ),
    Case(
        "valid_then_cl_te",
        b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n"
        + post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG")
        + b"GET /never HTTP/1.1\r\nHost: app.test\r\n\r\n",
        (fwd(b"GET", b"/first"), REFUSE),
    ),
    Case(
        "valid_then_bare_lf",
        b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\nGET /second HTTP/1.1\nHost: app.test\n\n",
        (fwd(b"GET", b"/first"), REFUSE),
    ),
    Case(
        "chunked_smuggles_after_last_chunk_ext",
        post(
            b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0;\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n\r\n"
        ),
        (REFUSE,),
    ),
    Case(
        "h2c_upgrade_on_plain_path",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\n\r\n",
        (either(b"GET", b"/"),),
    ),
]
