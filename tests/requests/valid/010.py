"""OPTIONS * (asterisk-form)"""

request = {'method': b'OPTIONS', 'path': b'*', 'target': b'*', 'target_form': 'asterisk'}
