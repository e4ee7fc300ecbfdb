"""an empty field value"""

request = {'headers': [(b'Host', b'a'), (b'X-Empty', b''), (b'X-Sp', b'')]}
