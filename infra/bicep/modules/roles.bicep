// Custom roles with exactly the storage operations lakevault performs. The built-in roles
// do not fit:
// - lakevault lists both accounts with their blob index tags, reads and writes tags (its
//   backup record is a tag; tombstones rewrite it). Storage Blob Data Reader and
//   Contributor hold no tags/read or tags/write; only Storage Blob Data Owner does, and it
//   also grants ACL and ownership changes.
// - the worker extends a message's invisibility while it works (Update Message:
//   messages/write), and both binaries create their queue if it is missing (Create Queue:
//   queues/write) and read its approximate length (Get Queue Metadata: queues/read).
//   Storage Queue Data Message Processor + Message Sender grant none of these.
// Permission names: https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory

@description('Prefix of the role names; role names are unique per tenant, so the resource group name is added.')
param namePrefix string

@description('Scopes where the roles can be assigned: this resource group and the source account\'s.')
param assignableScopes array

@description('Also define the role that lets lakevault write to the source account.')
param sourceWriteAccess bool = false

var containers = 'Microsoft.Storage/storageAccounts/blobServices/containers'
var blobs = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs'
var queues = 'Microsoft.Storage/storageAccounts/queueServices/queues'

// Source account, workers and coordinator: list containers and blobs with their tags,
// read blobs (copy sources, diagnostics, ranged copies, deep verify).
resource sourceRead 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'source-read')
  properties: {
    roleName: '${namePrefix} source read (${resourceGroup().name})'
    description: 'lakevault: read and list the source account\'s blobs with their index tags.'
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: [
          '${containers}/read'
        ]
        notActions: []
        dataActions: [
          '${blobs}/read'
          '${blobs}/tags/read'
        ]
        notDataActions: []
      }
    ]
  }
}

// Source account, only with sourceWriteAccess: `backup --snapshot` (create, then delete,
// source snapshots), `backup --lease` (source leases) and `restore` into the source
// account (write blobs with their tags, create the target container).
resource sourceWrite 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (sourceWriteAccess) {
  name: guid(resourceGroup().id, namePrefix, 'source-write')
  properties: {
    roleName: '${namePrefix} source write (${resourceGroup().name})'
    description: 'lakevault: snapshots, leases and restores on the source account.'
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: [
          '${containers}/read'
          '${containers}/write'
        ]
        notActions: []
        dataActions: [
          '${blobs}/write'
          '${blobs}/add/action'
          '${blobs}/delete'
          '${blobs}/tags/write'
        ]
        notDataActions: []
      }
    ]
  }
}

// Backup account, workers: copy into it (Copy Blob From URL, Put Block From URL, Put Block
// List, all with x-ms-tags), snapshot the version a copy replaces, read and rewrite the
// record tag (tombstones), create a missing backup container (distributed scans), write
// watermarks. No delete.
resource backupWrite 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'backup-write')
  properties: {
    roleName: '${namePrefix} backup write (${resourceGroup().name})'
    description: 'lakevault workers: write backup blobs and their index tags; no deletes.'
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: [
          '${containers}/read'
          '${containers}/write'
        ]
        notActions: []
        dataActions: [
          '${blobs}/read'
          '${blobs}/write'
          '${blobs}/add/action'
          '${blobs}/tags/read'
          '${blobs}/tags/write'
        ]
        notDataActions: []
      }
    ]
  }
}

// Backup account, coordinator: everything the workers do plus delete, for `purge`
// (retention of old versions and tombstoned blobs).
resource backupManage 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'backup-manage')
  properties: {
    roleName: '${namePrefix} backup manage (${resourceGroup().name})'
    description: 'lakevault coordinator: plan, verify, restore from and purge the backup account.'
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: [
          '${containers}/read'
          '${containers}/write'
        ]
        notActions: []
        dataActions: [
          '${blobs}/read'
          '${blobs}/write'
          '${blobs}/add/action'
          '${blobs}/delete'
          '${blobs}/tags/read'
          '${blobs}/tags/write'
        ]
        notDataActions: []
      }
    ]
  }
}

// Work queue and poison queue, workers and coordinator: create if missing, read the
// approximate length (--exit-when-idle), receive and delete (workers; `redrive` on the
// poison queue), extend invisibility while working, send (batches, retries, poison
// records, re-driven work).
resource queueUser 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'queue-user')
  properties: {
    roleName: '${namePrefix} queue user (${resourceGroup().name})'
    description: 'lakevault: send, receive, extend and delete messages of its own queues.'
    type: 'CustomRole'
    assignableScopes: assignableScopes
    permissions: [
      {
        actions: [
          '${queues}/read'
          '${queues}/write'
        ]
        notActions: []
        dataActions: [
          '${queues}/messages/read'
          '${queues}/messages/process/action'
          '${queues}/messages/add/action'
          '${queues}/messages/write'
        ]
        notDataActions: []
      }
    ]
  }
}

// Role definition names (GUIDs); assignments build the full id in their own subscription
// with subscriptionResourceId(), as for built-in roles.
output sourceRead string = sourceRead.name
output sourceWrite string = sourceWriteAccess ? sourceWrite.name : ''
output backupWrite string = backupWrite.name
output backupManage string = backupManage.name
output queueUser string = queueUser.name
