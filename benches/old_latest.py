"""The old way, for comparison: what the Python module did in every hook.

A fresh process authenticates from scratch with openstacksdk, lists every image of
the project page by page and filters on the client for the newest active image of
one name. Prints the id (or an empty line).
"""
import sys

import openstack


def main():
    cloud, name = sys.argv[1], sys.argv[2]
    conn = openstack.connect(cloud=cloud)
    images = [i for i in conn.image.images() if i.name == name and i.status == "active"]
    images.sort(key=lambda i: (i.created_at, i.id), reverse=True)
    print(images[0].id if images else "")


if __name__ == "__main__":
    main()
