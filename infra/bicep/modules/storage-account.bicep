// One storage account for lakevault: the backup account, or the optional ops account that
// holds the work queues and the job ledger. Hardened defaults: TLS 1.2, https only, no
// anonymous blob access, Entra ID authorisation by default, no cross-tenant replication.

@description('Account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string

@allowed([
  'Hot'
  'Cool'
])
param accessTier string = 'Hot'

@description('Shared Key authorisation (account keys, and SAS signed with them). Off: Entra ID only.')
param allowSharedKeyAccess bool = false

@description('Blob versioning. With it on, run workers with --no-history: the account keeps replaced versions itself.')
param enableVersioning bool = false

@description('Days deleted blobs and containers stay recoverable; 0 turns soft delete off.')
@minValue(0)
@maxValue(365)
param softDeleteDays int = 7

@description('Queues to create in this account (the work queue and its poison queue), or none.')
param queueNames array = []

@description('Role assignments on the whole account: [{ principalId, role }: role is a role definition name (GUID)].')
param accountGrants array = []

param tags object = {}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: accessTier
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: allowSharedKeyAccess
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    // Blob index tags carry lakevault's backup record; accounts with a hierarchical
    // namespace do not support them, so the backup account stays flat.
    isHnsEnabled: false
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: enableVersioning
    deleteRetentionPolicy: {
      enabled: softDeleteDays > 0
      days: softDeleteDays > 0 ? softDeleteDays : 1
    }
    containerDeleteRetentionPolicy: {
      enabled: softDeleteDays > 0
      days: softDeleteDays > 0 ? softDeleteDays : 1
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

resource accountRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in accountGrants: {
    scope: account
    name: guid(account.id, grant.principalId, grant.role)
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
    }
  }
]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
