"""query, mixed-case names and values kept byte-exact"""

request = {'headers': [(b'hOsT', b'Example.COM'),
             (b'User-Agent', b'curl/8.0'),
             (b'Accept', b'*/*'),
             (b'X-MiXeD', b'VaLuE')],
 'host': b'Example.COM',
 'target': b'/search?q=fast+proxy&lang=en'}
