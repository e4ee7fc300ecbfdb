"""absolute-form with an empty path and an upper-case scheme: path is /"""

request = {'host': b'example.org', 'path': b'/', 'target_form': 'absolute'}
