/*
 * od_contract.h — the object-store contract suite, run against every backend.
 *
 * od_contract_run(name, uri, flags) opens `uri` (an empty store) and runs every contract
 * test as a cmocka group called `name`; returns the number of failed tests (0 = pass).
 * flags:
 *   OD_CONTRACT_NO_CAS      the store does not honour conditional writes (s3rver): skip the
 *                           tests that need it, and instead check that the probe reports
 *                           caps.conditional_writes == 0. Such a store is a test double
 *                           (s3rver also rewrites objects in place, so readers can see a
 *                           truncated object while a PUT replaces it); the atomic-replace race
 *                           (readers vs. writers of one key) is left out too.
 *   OD_CONTRACT_MULTIPROC   also run the multi-process conditional-create race (fork; the
 *                           store must be shared between processes: file://, s3://).
 */
#ifndef OD_CONTRACT_H
#define OD_CONTRACT_H

enum { OD_CONTRACT_NO_CAS = 1, OD_CONTRACT_MULTIPROC = 2 };

int od_contract_run(const char *name, const char *uri, unsigned flags);

#endif
