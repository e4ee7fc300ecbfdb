"""field values: OWS trimmed, inner SP/HTAB and obs-text kept"""

request = {'headers': [(b'Host', b'example.com'), (b'X-Text', b'caf\xc3\xa9 \t au  lait')]}
