"""Transfer-Encoding with HTAB before an upper-case chunked"""

request = {'body': 'chunked'}
