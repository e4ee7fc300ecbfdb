"""target with percent-encoding and unusual visible characters"""

request = {'target': b'/a%20b/~user/[x]?y=|&z="q"#frag'}
