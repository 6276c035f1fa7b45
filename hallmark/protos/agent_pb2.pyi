from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttestAgentRequest(_message.Message):
    __slots__ = ("trust_domain", "attestation_type", "attestation_data", "csr", "challenge_response")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_DATA_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    attestation_type: str
    attestation_data: bytes
    csr: bytes
    challenge_response: bytes
    def __init__(self, trust_domain: _Optional[str] = ..., attestation_type: _Optional[str] = ..., attestation_data: _Optional[bytes] = ..., csr: _Optional[bytes] = ..., challenge_response: _Optional[bytes] = ...) -> None: ...

class AttestAgentResponse(_message.Message):
    __slots__ = ("spiffe_id", "svid_chain", "bundle", "challenge")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    bundle: Bundle
    challenge: bytes
    def __init__(self, spiffe_id: _Optional[str] = ..., svid_chain: _Optional[_Iterable[bytes]] = ..., bundle: _Optional[_Union[Bundle, _Mapping]] = ..., challenge: _Optional[bytes] = ...) -> None: ...

class RenewAgentRequest(_message.Message):
    __slots__ = ("csr",)
    CSR_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    def __init__(self, csr: _Optional[bytes] = ...) -> None: ...

class RenewAgentResponse(_message.Message):
    __slots__ = ("svid_chain",)
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, svid_chain: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FetchBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("trust_domain", "x509_authorities", "spiffe_bundle", "sequence", "federated_bundles", "tainted_x509_authorities", "tainted_jwt_key_ids")
    class FederatedBundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    TAINTED_X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    TAINTED_JWT_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    x509_authorities: _containers.RepeatedScalarFieldContainer[bytes]
    spiffe_bundle: bytes
    sequence: int
    federated_bundles: _containers.ScalarMap[str, bytes]
    tainted_x509_authorities: _containers.RepeatedScalarFieldContainer[bytes]
    tainted_jwt_key_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trust_domain: _Optional[str] = ..., x509_authorities: _Optional[_Iterable[bytes]] = ..., spiffe_bundle: _Optional[bytes] = ..., sequence: _Optional[int] = ..., federated_bundles: _Optional[_Mapping[str, bytes]] = ..., tainted_x509_authorities: _Optional[_Iterable[bytes]] = ..., tainted_jwt_key_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncAuthorizedEntriesRequest(_message.Message):
    __slots__ = ("since_revision", "page_size")
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    since_revision: int
    page_size: int
    def __init__(self, since_revision: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl", "dns_names", "hint", "federates_with", "admin", "downstream", "revision", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    JWT_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    spiffe_id: str
    parent_id: str
    selectors: _containers.RepeatedScalarFieldContainer[str]
    x509_svid_ttl: int
    jwt_svid_ttl: int
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    hint: str
    federates_with: _containers.RepeatedScalarFieldContainer[str]
    admin: bool
    downstream: bool
    revision: int
    expires_at: int
    def __init__(self, id: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., selectors: _Optional[_Iterable[str]] = ..., x509_svid_ttl: _Optional[int] = ..., jwt_svid_ttl: _Optional[int] = ..., dns_names: _Optional[_Iterable[str]] = ..., hint: _Optional[str] = ..., federates_with: _Optional[_Iterable[str]] = ..., admin: _Optional[bool] = ..., downstream: _Optional[bool] = ..., revision: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class SyncAuthorizedEntriesResponse(_message.Message):
    __slots__ = ("entries", "agent_id", "node_aliases", "removed_entry_ids", "revision", "more", "full")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ALIASES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_ENTRY_IDS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    agent_id: str
    node_aliases: _containers.RepeatedScalarFieldContainer[str]
    removed_entry_ids: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    more: bool
    full: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., agent_id: _Optional[str] = ..., node_aliases: _Optional[_Iterable[str]] = ..., removed_entry_ids: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ..., full: _Optional[bool] = ...) -> None: ...

class NewX509SVIDParams(_message.Message):
    __slots__ = ("entry_id", "csr")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    csr: bytes
    def __init__(self, entry_id: _Optional[str] = ..., csr: _Optional[bytes] = ...) -> None: ...

class BatchNewX509SVIDRequest(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[NewX509SVIDParams]
    def __init__(self, params: _Optional[_Iterable[_Union[NewX509SVIDParams, _Mapping]]] = ...) -> None: ...

class X509SVIDResult(_message.Message):
    __slots__ = ("entry_id", "svid_chain", "error_code", "error")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    error_code: str
    error: str
    def __init__(self, entry_id: _Optional[str] = ..., svid_chain: _Optional[_Iterable[bytes]] = ..., error_code: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class BatchNewX509SVIDResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[X509SVIDResult]
    def __init__(self, results: _Optional[_Iterable[_Union[X509SVIDResult, _Mapping]]] = ...) -> None: ...

class NewJWTSVIDRequest(_message.Message):
    __slots__ = ("entry_id", "audience")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entry_id: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ...) -> None: ...

class NewJWTSVIDResponse(_message.Message):
    __slots__ = ("token", "issued_at", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    issued_at: int
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class WatchUpdatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateNotice(_message.Message):
    __slots__ = ("entries_revision", "bundle_sequence", "resync")
    ENTRIES_REVISION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    entries_revision: int
    bundle_sequence: int
    resync: bool
    def __init__(self, entries_revision: _Optional[int] = ..., bundle_sequence: _Optional[int] = ..., resync: _Optional[bool] = ...) -> None: ...
