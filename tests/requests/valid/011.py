"""Expect: 100-continue (case-insensitive)"""

request = {'body': 'length', 'content_length': 3, 'expect_continue': True}
