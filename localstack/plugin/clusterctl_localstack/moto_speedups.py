"""Fixes for moto's EC2: tags that keep the harness as fast after a hundred clusters as after one,
and an instance's profile after a replaced association.

moto finds one resource's tags by scanning every tag of the region (``get_tags`` calls
``describe_tags`` with a ``resource-id`` filter, a regex matched against every tag), and it keeps
the tags of deleted resources. Every tag filter of every Describe* call, and every resource a
Describe* call renders, pays for that scan: after the create/destroy cycles of one ``scripts/test``
run (6,600 tags), ``DescribeInstances`` of 100 instances took 1.4 s on an idle LocalStack, and
everything that polls it slowed down as the session went on.

``install`` (1) reads a resource's tags from moto's tag table directly, giving what the scan gave
(same dicts, same order), and (2) drops the tags of a VPC, subnet, security group, internet gateway,
route table, volume or network interface when moto deletes it, as AWS does; (3) makes
``ReplaceIamInstanceProfileAssociation`` change the instance's profile as ``DescribeInstances``
shows it (moto changes only the association, so a running machine given another profile showed the
old one for ever; the metadata service, which reads the association, already served the new role).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

LOG = logging.getLogger("clusterctl.moto")

@functools.cache  # once: a second call does nothing
def install() -> None:
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        rid = getattr(self, "id", None)
        if not rid:
            return []
        tags = self.ec2_backend.tags.get(rid)  # .get: the table is a defaultdict
        if not tags:
            return []
        rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
        return [{"resource_id": rid, "key": k, "value": v, "resource_type": rtype} for k, v in list(tags.items())]

    TaggedEC2Resource.get_tags = get_tags

    def forget_tags_on(name: str, resource_id: Any) -> None:
        orig = getattr(EC2Backend, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = orig(self, *args, **kwargs)
            rid = resource_id(args, kwargs)
            if rid:
                self.tags.pop(rid, None)
            return result

        setattr(EC2Backend, name, wrapped)

    first = lambda key: lambda args, kwargs: args[0] if args else kwargs.get(key)  # noqa: E731
    forget_tags_on("delete_vpc", first("vpc_id"))
    forget_tags_on("delete_subnet", first("subnet_id"))
    forget_tags_on("delete_internet_gateway", first("internet_gateway_id"))
    forget_tags_on("delete_route_table", first("route_table_id"))
    forget_tags_on("delete_volume", first("volume_id"))
    forget_tags_on("delete_network_interface", first("eni_id"))
    # security groups are deleted by id (clusterctl) or by name
    forget_tags_on("delete_security_group", lambda args, kwargs: kwargs.get("group_id") or (args[1] if len(args) > 1 else None))
    replace = EC2Backend.replace_iam_instance_profile_association

    def replace_association(self: Any, *args: Any, **kwargs: Any) -> Any:
        association = replace(self, *args, **kwargs)
        self.modify_instance_attribute(
            association.instance_id, "iam_instance_profile", {"Arn": association.iam_instance_profile.arn, "Id": association.association_id}
        )
        return association

    EC2Backend.replace_iam_instance_profile_association = replace_association
    LOG.info("moto EC2 tag look-ups made direct; tags of deleted resources dropped; replaced profile associations shown")
