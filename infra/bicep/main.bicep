// lakevault on Azure: the backup account, the work and poison queues, one user-assigned
// identity per role with least-privilege access, federated credentials for AKS workload
// identity, and (optionally) autoscaling of a VM scale set of workers on the queue length.
//
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
//
// See docs/operations.md for the whole procedure and what was validated.

targetScope = 'resourceGroup'

@description('Region of the new resources.')
param location string = resourceGroup().location

@description('Prefix of the identities, custom roles and autoscale setting.')
@minLength(3)
@maxLength(24)
param namePrefix string = 'lakevault'

param tags object = {}

// ---------------------------------------------------------------- backup account

@description('Name of the backup account to create (3-24 lowercase letters and digits). The [accounts.<alias>] of backup.destination in lakevault.toml.')
@minLength(3)
@maxLength(24)
param backupAccountName string

@description('Redundancy of the backup account. A backup usually wants another zone or region than its source.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param backupSkuName string = 'Standard_GZRS'

@description('Default access tier of the backup account (workers can override per blob with --access-tier).')
@allowed([
  'Hot'
  'Cool'
])
param backupAccessTier string = 'Cool'

@description('Blob versioning on the backup account. On: run workers with --no-history (the account keeps replaced versions). Off: lakevault keeps them as snapshots.')
param enableVersioning bool = false

@description('Shared Key authorisation (account keys and SAS signed with them) on the accounts created here. Off: Entra ID only, as the workload_identity and managed_identity credential kinds use. On only for the shared_key or sas kinds.')
param allowSharedKeyAccess bool = false

@description('Days deleted blobs and containers stay recoverable in the accounts created here; 0 turns soft delete off.')
@minValue(0)
@maxValue(365)
param softDeleteDays int = 7

// ---------------------------------------------------------------- ops account (optional)

@description('Name of a separate account for the work queues and the job ledger (lakevault-state/jobs). Empty: both live in the backup account. A separate account keeps queue traffic off the backup account\'s request budget and makes its queue metrics lakevault\'s alone.')
param opsAccountName string = ''

// ---------------------------------------------------------------- queues

@description('[queue].name in lakevault.toml. Failures go to <name>-poison, created too.')
@minLength(3)
@maxLength(56)
param queueName string = 'lakevault-copy'

// ---------------------------------------------------------------- source account

@description('Name of the existing source account (the data lake to back up).')
param sourceAccountName string

@description('Resource group of the source account.')
param sourceResourceGroupName string = resourceGroup().name

@description('Subscription of the source account.')
param sourceSubscriptionId string = subscription().subscriptionId

@description('Write access to the source for workers and coordinator: needed by `backup --snapshot`, `backup --lease` and `restore` into the source account. Off: read only.')
param sourceWriteAccess bool = false

@description('Storage Blob Delegator on the source, for accounts configured with copy_source = "user_delegation_sas".')
param sourceUserDelegationSas bool = false

// ---------------------------------------------------------------- AKS workload identity

@description('OIDC issuer URL of the AKS cluster (az aks show --query oidcIssuerProfile.issuerUrl -o tsv). Empty: no federated credentials and no KEDA identity.')
param aksOidcIssuerUrl string = ''

@description('Namespace of the lakevault pods (infra/k8s/base).')
param kubernetesNamespace string = 'lakevault'

@description('Service account of the worker pods.')
param workerServiceAccount string = 'lakevault-worker'

@description('Service account of the coordinator pods (serve and the backup CronJobs).')
param coordinatorServiceAccount string = 'lakevault-coordinator'

@description('Namespace and service account of the KEDA operator, which reads the queue length with its own identity.')
param kedaNamespace string = 'keda'
param kedaServiceAccount string = 'keda-operator'

// ---------------------------------------------------------------- VM scale set autoscale

@description('Resource id of an existing VM scale set running workers (infra/vmss). Empty: no autoscale setting. Give the scale set the worker identity (output workerIdentityId).')
param workerScaleSetId string = ''

@minValue(0)
param scaleSetMinInstances int = 1

@minValue(1)
param scaleSetMaxInstances int = 10

@description('Messages per instance above which instances are added; use the workers\' LAKEVAULT_PREFETCH (infra/vmss worker.env: 4).')
@minValue(1)
param messagesPerInstance int = 4

// ================================================================ resources

var poisonQueueName = '${queueName}-poison'
var queueAccountName = empty(opsAccountName) ? backupAccountName : opsAccountName
var useAks = !empty(aksOidcIssuerUrl)
var sourceResourceGroupId = '/subscriptions/${sourceSubscriptionId}/resourceGroups/${sourceResourceGroupName}'

// Built-in roles (role definition names).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageBlobDelegator = 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
var storageQueueDataReader = '19e7f393-937e-4f77-808e-94535e297925'

resource workerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-worker'
  location: location
  tags: tags
}

resource coordinatorIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-coordinator'
  location: location
  tags: tags
}

// KEDA's azure-queue scaler reads the queue length (Get Queue Metadata) and nothing else.
resource scalerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (useAks) {
  name: '${namePrefix}-keda-scaler'
  location: location
  tags: tags
}

// One federated credential per identity, so none of them is written concurrently (the
// service refuses parallel writes of credentials of one identity).
resource workerFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = if (useAks) {
  parent: workerIdentity
  name: 'aks-${kubernetesNamespace}-${workerServiceAccount}'
  properties: {
    issuer: aksOidcIssuerUrl
    subject: 'system:serviceaccount:${kubernetesNamespace}:${workerServiceAccount}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

resource coordinatorFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = if (useAks) {
  parent: coordinatorIdentity
  name: 'aks-${kubernetesNamespace}-${coordinatorServiceAccount}'
  properties: {
    issuer: aksOidcIssuerUrl
    subject: 'system:serviceaccount:${kubernetesNamespace}:${coordinatorServiceAccount}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

resource scalerFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = if (useAks) {
  parent: scalerIdentity
  name: 'aks-${kedaNamespace}-${kedaServiceAccount}'
  properties: {
    issuer: aksOidcIssuerUrl
    subject: 'system:serviceaccount:${kedaNamespace}:${kedaServiceAccount}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

module roles 'modules/roles.bicep' = {
  name: '${namePrefix}-roles'
  params: {
    namePrefix: namePrefix
    assignableScopes: union([resourceGroup().id], [sourceResourceGroupId])
    sourceWriteAccess: sourceWriteAccess
  }
}

var workerBackupGrants = [
  {
    principalId: workerIdentity.properties.principalId
    role: roles.outputs.backupWrite
  }
  {
    principalId: coordinatorIdentity.properties.principalId
    role: roles.outputs.backupManage
  }
]

// The job ledger (lakevault-state/jobs) lives in the queue's account: plain JSON blobs,
// no tags, so the built-in Contributor fits when that is a separate ops account.
var opsGrants = [
  {
    principalId: workerIdentity.properties.principalId
    role: storageBlobDataContributor
  }
  {
    principalId: coordinatorIdentity.properties.principalId
    role: storageBlobDataContributor
  }
]

module backupAccount 'modules/storage-account.bicep' = {
  name: '${namePrefix}-backup-account'
  params: {
    name: backupAccountName
    location: location
    skuName: backupSkuName
    accessTier: backupAccessTier
    allowSharedKeyAccess: allowSharedKeyAccess
    enableVersioning: enableVersioning
    softDeleteDays: softDeleteDays
    queueNames: empty(opsAccountName) ? [queueName, poisonQueueName] : []
    accountGrants: workerBackupGrants
    tags: tags
  }
}

module opsAccount 'modules/storage-account.bicep' = if (!empty(opsAccountName)) {
  name: '${namePrefix}-ops-account'
  params: {
    name: opsAccountName
    location: location
    skuName: 'Standard_ZRS'
    accessTier: 'Hot'
    allowSharedKeyAccess: allowSharedKeyAccess
    enableVersioning: false
    softDeleteDays: softDeleteDays
    queueNames: [
      queueName
      poisonQueueName
    ]
    accountGrants: opsGrants
    tags: tags
  }
}

var queueUserGrants = [
  {
    principalId: workerIdentity.properties.principalId
    role: roles.outputs.queueUser
  }
  {
    principalId: coordinatorIdentity.properties.principalId
    role: roles.outputs.queueUser
  }
]

var scalerGrants = useAks ? [
  {
    principalId: scalerIdentity.properties.principalId
    role: storageQueueDataReader
  }
] : []

module workQueueAccess 'modules/queue-access.bicep' = {
  name: '${namePrefix}-work-queue-access'
  params: {
    accountName: queueAccountName
    queueName: queueName
    grants: concat(queueUserGrants, scalerGrants)
  }
  dependsOn: [
    backupAccount
    opsAccount
  ]
}

module poisonQueueAccess 'modules/queue-access.bicep' = {
  name: '${namePrefix}-poison-queue-access'
  params: {
    accountName: queueAccountName
    queueName: poisonQueueName
    grants: queueUserGrants
  }
  dependsOn: [
    backupAccount
    opsAccount
  ]
}

var sourceReadGrants = [
  {
    principalId: workerIdentity.properties.principalId
    role: roles.outputs.sourceRead
  }
  {
    principalId: coordinatorIdentity.properties.principalId
    role: roles.outputs.sourceRead
  }
]

var sourceWriteGrants = sourceWriteAccess ? [
  {
    principalId: workerIdentity.properties.principalId
    role: roles.outputs.sourceWrite
  }
  {
    principalId: coordinatorIdentity.properties.principalId
    role: roles.outputs.sourceWrite
  }
] : []

// Get User Delegation Key is requested by the workers (they sign the copy-source SAS).
var sourceDelegationGrants = sourceUserDelegationSas ? [
  {
    principalId: workerIdentity.properties.principalId
    role: storageBlobDelegator
  }
] : []

module sourceAccess 'modules/source-access.bicep' = {
  name: '${namePrefix}-source-access'
  scope: resourceGroup(sourceSubscriptionId, sourceResourceGroupName)
  params: {
    accountName: sourceAccountName
    grants: concat(sourceReadGrants, sourceWriteGrants, sourceDelegationGrants)
  }
}

// VM scale set of workers: scale on the work queue's length per instance. The "storage
// queue" metric of Azure Monitor autoscale (ApproximateMessageCount of one queue, threshold
// per instance); the account-wide capacity metric QueueMessageCount is hourly and sums
// every queue of the account, so it cannot drive scaling.
resource workerAutoscale 'Microsoft.Insights/autoscalesettings@2022-10-01' = if (!empty(workerScaleSetId)) {
  name: '${namePrefix}-worker-autoscale'
  location: location
  tags: tags
  properties: {
    name: '${namePrefix}-worker-autoscale'
    enabled: true
    targetResourceUri: workerScaleSetId
    profiles: [
      {
        name: 'work-queue'
        capacity: {
          minimum: string(scaleSetMinInstances)
          maximum: string(scaleSetMaxInstances)
          default: string(max(scaleSetMinInstances, 1))
        }
        rules: [
          {
            metricTrigger: {
              metricName: 'ApproximateMessageCount'
              metricNamespace: ''
              metricResourceUri: '${resourceId('Microsoft.Storage/storageAccounts', queueAccountName)}/services/queue/queues/${queueName}'
              timeGrain: 'PT1M'
              statistic: 'Average'
              timeWindow: 'PT5M'
              timeAggregation: 'Average'
              operator: 'GreaterThan'
              threshold: messagesPerInstance
            }
            scaleAction: {
              direction: 'Increase'
              type: 'ChangeCount'
              value: '2'
              cooldown: 'PT5M'
            }
          }
          {
            // Fewer messages than instances for 15 minutes: remove one. The count includes
            // messages held by workers, so busy instances keep it up.
            metricTrigger: {
              metricName: 'ApproximateMessageCount'
              metricNamespace: ''
              metricResourceUri: '${resourceId('Microsoft.Storage/storageAccounts', queueAccountName)}/services/queue/queues/${queueName}'
              timeGrain: 'PT1M'
              statistic: 'Average'
              timeWindow: 'PT15M'
              timeAggregation: 'Average'
              operator: 'LessThan'
              threshold: 1
            }
            scaleAction: {
              direction: 'Decrease'
              type: 'ChangeCount'
              value: '1'
              cooldown: 'PT10M'
            }
          }
        ]
      }
    ]
  }
  dependsOn: [
    backupAccount
    opsAccount
  ]
}

output workerClientId string = workerIdentity.properties.clientId
output workerIdentityId string = workerIdentity.id
output coordinatorClientId string = coordinatorIdentity.properties.clientId
output coordinatorIdentityId string = coordinatorIdentity.id
output scalerClientId string = useAks ? scalerIdentity.properties.clientId : ''
output backupAccountName string = backupAccount.outputs.name
output queueAccountName string = queueAccountName
output queueName string = queueName
output poisonQueueName string = poisonQueueName
