"""Let the bed's services keep their own Keystone token for its short life.

Imported by every service of the test bed (uwsgi.ini: import = ...).

The bed issues 60 s tokens (the daemon's token-refresh test watches three
lifetimes in three minutes). keystoneauth renews a token that expires within
MIN_TOKEN_LIFE_SECONDS, 120 s, so with 60 s tokens every use renewed it:
Glance's auth_token middleware logged its service user in three times per
request (about 750 ms a call), and the capped Glance's unified limits more.
With 10 s, a service token serves 50 s of its 60, as a real cloud's serves
most of its hour. Nothing the daemon sees changes but the time Glance takes.
"""

import os
import sys

from keystoneauth1.identity import base

base.BaseIdentityPlugin.MIN_TOKEN_LIFE_SECONDS = 10

print(f"osih_short_tokens: service tokens renewed 10 s before they expire (pid {os.getpid()})",
      file=sys.stderr, flush=True)
